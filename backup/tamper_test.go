package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// sentinels are the kinds a rejected snapshot may be reported as.
var sentinels = []error{ErrNotSnapshot, ErrNewerVersion, ErrWrongKey, ErrKeyRequired, ErrUnencrypted, ErrCorrupted, ErrDigestMismatch,
	ErrUnsigned, ErrBadSignature}

func kindOf(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

// bodyStart returns the offset of the body in a snapshot file.
func bodyStart(data []byte) int {
	return prefixLen + int(binary.BigEndian.Uint32(data[len(magic)+1:prefixLen]))
}

// TestEveryByteFlipRejected flips each byte of a small snapshot (two ways)
// and checks Verify rejects every result with one of the sentinel errors.
// In the body, where age authenticates everything, the error must say the
// file is damaged; in the signature, that the signature is bad.
func TestEveryByteFlipRejected(t *testing.T) {
	key := newKey(t)
	orig := smallSnapshot(t, key)
	body := bodyStart(orig)
	t.Logf("snapshot of %d bytes, body at %d", len(orig), body)
	p := filepath.Join(t.TempDir(), "flip.kbsnap")
	kinds := map[error]int{}
	for i := range orig {
		for _, mask := range []byte{0x01, 0x80} {
			data := bytes.Clone(orig)
			data[i] ^= mask
			// Through a file for a sample of positions (same code path, but
			// slower); in memory for the rest.
			var err error
			if i%64 == 0 {
				if err := os.WriteFile(p, data, 0o600); err != nil {
					t.Fatal(err)
				}
				_, err = Verify(p, key, testTrust)
			} else {
				_, err = verifyBytes(data, key)
			}
			if err == nil {
				t.Fatalf("flip of byte %d (mask %#x) not detected", i, mask)
			}
			kind := kindOf(err)
			if kind == nil {
				t.Fatalf("flip of byte %d: error of no known kind: %v", i, err)
			}
			sig := len(orig) - sigBlockLen
			if i >= body && i < sig && kind != ErrCorrupted {
				t.Fatalf("flip of body byte %d: %v, want ErrCorrupted", i, err)
			}
			if i >= sig+len(sigMagic) && kind != ErrBadSignature {
				t.Fatalf("flip of signature byte %d: %v, want ErrBadSignature", i, err)
			}
			kinds[kind]++
		}
	}
	t.Logf("rejections by kind: %v", kinds)
}

func TestEveryTruncationRejected(t *testing.T) {
	key := newKey(t)
	orig := smallSnapshot(t, key)
	for n := range len(orig) {
		_, err := verifyBytes(orig[:n], key)
		if err == nil {
			t.Fatalf("truncation to %d bytes not detected", n)
		}
		if k := kindOf(err); k != ErrCorrupted && k != ErrNotSnapshot {
			t.Fatalf("truncation to %d bytes: %v, want ErrCorrupted", n, err)
		}
	}
	// And through the file-based API at a few points.
	p := filepath.Join(t.TempDir(), "cut.kbsnap")
	for _, n := range []int{0, 5, prefixLen, bodyStart(orig), len(orig) / 2, len(orig) - 1} {
		if err := os.WriteFile(p, orig[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(p, key, testTrust); kindOf(err) != ErrCorrupted {
			t.Errorf("Verify of %d-byte truncation: %v, want ErrCorrupted", n, err)
		}
	}
}

func TestAppendedDataRejected(t *testing.T) {
	key := newKey(t)
	orig := smallSnapshot(t, key)
	for _, extra := range [][]byte{{0}, []byte("garbage"), orig} {
		if _, err := verifyBytes(append(bytes.Clone(orig), extra...), key); !errors.Is(err, ErrCorrupted) {
			t.Errorf("appended %d bytes: %v, want ErrCorrupted", len(extra), err)
		}
	}
}

// TestHeaderEditDetected edits the plaintext header into another valid one:
// only the digest bound into the body can catch that.
func TestHeaderEditDetected(t *testing.T) {
	key := newKey(t)
	data := smallSnapshot(t, key)
	i := bytes.Index(data, []byte(`"etcd_revision":12345`))
	if i < 0 {
		t.Fatal("revision not found in header")
	}
	copy(data[i:], `"etcd_revision":99999`)
	if _, err := verifyBytes(data, key); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("edited header: %v, want ErrDigestMismatch", err)
	}
	// ReadHeader alone does not authenticate, by design.
	p := filepath.Join(t.TempDir(), "edited.kbsnap")
	os.WriteFile(p, data, 0o600)
	if h, _, err := ReadHeader(p); err != nil || h.EtcdRevision != 99999 {
		t.Fatalf("ReadHeader = %d, %v", h.EtcdRevision, err)
	}
}

func TestWrongKey(t *testing.T) {
	key := newKey(t)
	e := writeSnapshot(t, t.TempDir(), []byte("db"), WriteOptions{Header: testHeader(), Key: key})
	other := newKey(t)
	_, err := Verify(e.Path, other, testTrust)
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Verify with another key: %v, want ErrWrongKey", err)
	}
	t.Logf("wrong key error: %v", err)
	if _, err := Verify(e.Path, nil, testTrust); !errors.Is(err, ErrKeyRequired) {
		t.Fatalf("Verify without a key: %v, want ErrKeyRequired", err)
	}
}

func TestNotSnapshot(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"text":   []byte("hello, this is not a snapshot at all"),
		"random": randomBytes(5000, 11),
		"short":  []byte("KUBOX"[:2] + "xx"),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		if _, err := Verify(p, newKey(t), testTrust); !errors.Is(err, ErrNotSnapshot) {
			t.Errorf("%s: Verify = %v, want ErrNotSnapshot", name, err)
		}
		if _, _, err := ReadHeader(p); !errors.Is(err, ErrNotSnapshot) {
			t.Errorf("%s: ReadHeader = %v, want ErrNotSnapshot", name, err)
		}
	}
	if _, _, err := ReadHeader(dir); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("ReadHeader of a dir = %v, want ErrNotSnapshot", err)
	}
}

func TestNewerVersion(t *testing.T) {
	key := newKey(t)
	data := smallSnapshot(t, key)
	data[len(magic)] = FormatVersion + 1
	p := filepath.Join(t.TempDir(), "future.kbsnap")
	os.WriteFile(p, data, 0o600)
	_, err := Verify(p, key, testTrust)
	if !errors.Is(err, ErrNewerVersion) {
		t.Fatalf("Verify = %v, want ErrNewerVersion", err)
	}
	t.Logf("newer version error: %v", err)
	if _, _, err := ReadHeader(p); !errors.Is(err, ErrNewerVersion) {
		t.Fatalf("ReadHeader = %v, want ErrNewerVersion", err)
	}
}
