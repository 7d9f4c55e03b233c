package backup

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// TestSignedRoundTrip: a box writes with only the recipient and the signing
// key; the identity and the trusted signer read it back, through any way of
// reading the stream.
func TestSignedRoundTrip(t *testing.T) {
	key := newKey(t)
	signer, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	db := randomBytes(300<<10, 11)
	e := writeSnapshot(t, t.TempDir(), db, WriteOptions{Header: testHeader(), Recipient: key.Recipient(), Signer: signer})
	if e.Header.FormatVersion != 3 || e.Header.Signer != signer.Public() || e.Header.Recipient != key.Recipient() {
		t.Fatalf("header %+v", e.Header)
	}
	trust := Trust{Signer: signer.Public()}
	h, err := Verify(e.Path, key, trust)
	if err != nil {
		t.Fatal(err)
	}
	if w := SignatureWarning(h, trust); w != "" {
		t.Errorf("warning for a checked signature: %q", w)
	}
	target := filepath.Join(t.TempDir(), "x")
	if _, err := Extract(e.Path, key, trust, target); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(target, "etcd.db")); !bytes.Equal(got, db) {
		t.Error("extracted db differs")
	}
	data, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != e.Size {
		t.Errorf("entry size %d, file %d", e.Size, len(data))
	}
	// The signature block is held back from the body however the file is
	// read: one byte at a time, or in odd halves.
	for name, wrap := range map[string]func(io.Reader) io.Reader{"one byte": iotest.OneByteReader, "half": iotest.HalfReader} {
		if _, err := readSnapshot(wrap(bytes.NewReader(data)), key, trust, discard{}); err != nil {
			t.Errorf("%s reads: %v", name, err)
		}
	}
}

// TestForgedSnapshotsRefused: what someone who can write to the snapshot
// store, and knows the recipient from any snapshot's header, can make.
func TestForgedSnapshotsRefused(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	real := writeSnapshot(t, dir, []byte("the real db"), WriteOptions{Header: testHeader(), Key: key})
	realData, _ := os.ReadFile(real.Path)
	// Made to the recipient in the header, with a correct body and trailer.
	hdr, _, err := ReadHeader(real.Path)
	if err != nil {
		t.Fatal(err)
	}
	forged := func(signer *SigningKey) []byte {
		t.Helper()
		e, err := Write(t.Context(), t.TempDir(), bytes.NewReader([]byte("the forged db")),
			WriteOptions{Header: testHeader(), Recipient: hdr.Recipient, Signer: signer})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(e.Path)
		return data
	}
	attacker, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	unsigned := forged(nil)
	foreign := forged(attacker)
	// The real snapshot's signature block on the forged body: the header
	// names the trusted signer, the signature does not fit.
	other := writeSnapshot(t, dir, []byte("another db of ours"), WriteOptions{Header: testHeader(), Key: key})
	otherData, _ := os.ReadFile(other.Path)
	swapped := append(bytes.Clone(otherData[:len(otherData)-sigBlockLen]), realData[len(realData)-sigBlockLen:]...)
	// A flipped ciphertext byte under a kept signature.
	tampered := bytes.Clone(realData)
	tampered[len(tampered)-sigBlockLen-100] ^= 1

	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"unsigned", unsigned, ErrUnsigned},
		{"other signer", foreign, ErrBadSignature},
		{"swapped signature", swapped, ErrBadSignature},
		{"tampered ciphertext", tampered, ErrCorrupted},
		{"signature cut off", realData[:len(realData)-sigBlockLen], ErrCorrupted},
	} {
		_, err := verifyBytes(c.data, key)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error of more than one line: %q", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
	}
	// A wrong key says so before the signer is looked at.
	if _, err := verifyBytes(foreign, newKey(t)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("foreign snapshot, wrong key: %v, want ErrWrongKey", err)
	}
	// Nothing trusted at all (a key file naming no signer) refuses a signed
	// snapshot too.
	if _, err := readSnapshot(bytes.NewReader(realData), key, Trust{}, discard{}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("no trusted signer: %v, want ErrBadSignature", err)
	}
	// The operator may accept unsigned or foreign snapshots knowingly.
	skip := Trust{InsecureSkipSignature: true}
	for name, data := range map[string][]byte{"unsigned": unsigned, "other signer": foreign} {
		h, err := readSnapshot(bytes.NewReader(data), key, skip, discard{})
		if err != nil {
			t.Errorf("%s with InsecureSkipSignature: %v", name, err)
		} else if SignatureWarning(h, skip) == "" {
			t.Errorf("%s with InsecureSkipSignature: no warning", name)
		}
	}
}

// TestOldFormatAccepted: a snapshot of format version 2 (made before
// snapshots were signed, kept as a fuzz seed) restores, with a warning,
// whatever signer is trusted.
func TestOldFormatAccepted(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadSnapshot", "v2-valid-encrypted"))
	if err != nil {
		t.Fatal(err)
	}
	data := seedBytes(t, raw)
	p := filepath.Join(t.TempDir(), "old.kbsnap")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, trust := range []Trust{testTrust, {}} {
		h, err := Verify(p, fixedKey(t), trust)
		if err != nil {
			t.Fatalf("old snapshot: %v", err)
		}
		w := SignatureWarning(h, trust)
		if h.FormatVersion != 2 || !strings.Contains(w, "WARNING") || strings.Contains(w, "\n") {
			t.Errorf("format version %d, warning %q", h.FormatVersion, w)
		}
		if _, err := Extract(p, fixedKey(t), trust, filepath.Join(t.TempDir(), "x")); err != nil {
			t.Errorf("extract old snapshot: %v", err)
		}
	}
	// An old-format header cannot be given a signer, nor a new one lose
	// its signature by claiming an old version: the header is bound into
	// the body.
	old := bytes.Clone(data)
	old[len(magic)] = 3
	if _, err := verifyBytes(old, fixedKey(t)); err == nil {
		t.Error("version byte raised to 3 still verifies")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "backup.key")
	kf, err := CreateKeyFiles(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(kf.Created) != 3 {
		t.Errorf("created %v", kf.Created)
	}
	assertMode(t, k, 0o600)
	assertMode(t, SigningKeyFile(k), 0o600)
	assertMode(t, PublicKeyFile(k), 0o644)
	id, err := LoadKeyFile(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, signer, err := LoadWriterKeys(k)
	if err != nil {
		t.Fatal(err)
	}
	if pub.Recipient != id.Recipient() || pub.Signer != signer.Public() || kf.Public != pub {
		t.Errorf("public keys %+v do not fit identity %s and signer %s", pub, id.Recipient(), signer.Public())
	}
	if s, err := TrustedSigner(k); err != nil || s != pub.Signer {
		t.Errorf("TrustedSigner = %q, %v; want %q", s, err, pub.Signer)
	}
	// The identity names the signer itself, so it is all a restore on a
	// new box needs.
	if err := os.Remove(PublicKeyFile(k)); err != nil {
		t.Fatal(err)
	}
	if s, err := TrustedSigner(k); err != nil || s != pub.Signer {
		t.Errorf("TrustedSigner without .pub = %q, %v", s, err)
	}
	if _, err := CreateKeyFiles(k); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateKeyFiles: %v, want fs.ErrExist", err)
	}
	// The private halves are never printed.
	if strings.Contains(signer.String(), signingKeyPrefix) {
		t.Error("String shows the signing key")
	}
	if err := os.Chmod(SigningKeyFile(k), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(k); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("readable signing key: %v, want ErrKeyPermissions", err)
	}

	// A key made before snapshots were signed: CreateKeyFiles keeps it and
	// adds the rest; readers then trust the .pub beside it.
	oldFile := filepath.Join(dir, "old.key")
	if _, err := WriteKeyFile(oldFile); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(oldFile)
	if s, err := TrustedSigner(oldFile); err != nil || s != "" {
		t.Errorf("TrustedSigner of an old key alone = %q, %v; want none", s, err)
	}
	kf, err = CreateKeyFiles(oldFile)
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(oldFile); !bytes.Equal(before, after) {
		t.Error("CreateKeyFiles changed an existing identity")
	}
	if len(kf.Created) != 2 {
		t.Errorf("created %v, want the signing key and the public file", kf.Created)
	}
	if s, err := TrustedSigner(oldFile); err != nil || s != kf.Public.Signer {
		t.Errorf("TrustedSigner of an old key with .pub = %q, %v", s, err)
	}
	// .pub and .sign that do not belong together are refused.
	if err := os.WriteFile(PublicKeyFile(oldFile), pub.fileContent(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadWriterKeys(oldFile); !errors.Is(err, ErrNotKey) {
		t.Errorf("mismatched .pub and .sign: %v, want ErrNotKey", err)
	}
}
