package backup

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzReadSnapshot runs the whole reader (header, key matching, age, zstd,
// tar, checks) on arbitrary bytes, with the fixed test key and without a
// key (which reaches the zstd and tar code of unencrypted snapshots). It
// must never panic or hang, must reject with a classified error, and may
// only accept what is self-consistent.
func FuzzReadSnapshot(f *testing.F) {
	key := fixedKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range []*Key{key, nil} {
			h, err := readSnapshot(bytes.NewReader(data), k, testTrust, discard{})
			if err != nil {
				if kindOf(err) == nil {
					t.Fatalf("error of no known kind: %v", err)
				}
				continue
			}
			if (k == nil) != (h.Encryption == EncryptionNone) {
				t.Fatalf("accepted encryption %q with key %v", h.Encryption, k)
			}
			_, ph, err := readPrefix(bytes.NewReader(data))
			if err != nil || ph != h {
				t.Fatalf("accepted snapshot whose header reads differently: %v", err)
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus of
// FuzzReadSnapshot when KUBOX_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("KUBOX_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set KUBOX_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz/FuzzReadSnapshot")
	}
	pki := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(pki, []byte("cert"), 0o644)
	snap := func(opts WriteOptions) []byte {
		opts.Header, opts.PKIFiles = testHeader(), map[string]string{"ca.crt": pki, "etcd/ca.key": pki}
		e := writeSnapshot(t, t.TempDir(), []byte("etcd db bytes etcd db bytes"), opts)
		data, err := os.ReadFile(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	enc := snap(WriteOptions{Key: fixedKey(t)})
	plain := snap(WriteOptions{InsecurePlaintext: true})
	newer := bytes.Clone(enc)
	newer[len(magic)] = FormatVersion + 1
	seeds := map[string][]byte{
		"valid-encrypted":     enc,
		"valid-plaintext":     plain,
		"truncated-encrypted": enc[:len(enc)*2/3],
		"truncated-plaintext": plain[:len(plain)-30],
		"newer-version":       newer,
		"garbage":             randomBytes(300, 42),
		"garbage-with-magic":  append([]byte(magic+"\x01\x00\x00\x00\x10"), randomBytes(200, 43)...),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadSnapshot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommittedSeedsStillRead keeps the committed valid seeds readable: they
// are files made by earlier builds (v1-*: format version 1, with SHA-256;
// v2-*: format version 2, unsigned), so this is also a format compatibility
// check: the unsigned old formats are still accepted, with a warning.
func TestCommittedSeedsStillRead(t *testing.T) {
	for name, key := range map[string]*Key{"valid-encrypted": fixedKey(t), "valid-plaintext": nil,
		"v2-valid-encrypted": fixedKey(t), "v2-valid-plaintext": nil,
		"v1-valid-encrypted": fixedKey(t), "v1-valid-plaintext": nil} {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadSnapshot", name))
		if err != nil {
			t.Fatal(err)
		}
		h, err := verifyBytes(seedBytes(t, raw), key)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		old := strings.HasPrefix(name, "v1-") || strings.HasPrefix(name, "v2-")
		if w := SignatureWarning(h, testTrust); old != (w != "") || old == (h.Signer != "") {
			t.Errorf("%s: format version %d, signer %q, warning %q", name, h.FormatVersion, h.Signer, w)
		}
	}
}

// seedBytes decodes a committed fuzz seed file.
func seedBytes(t testing.TB, raw []byte) []byte {
	t.Helper()
	lit := strings.TrimSuffix(strings.TrimPrefix(string(raw), "go test fuzz v1\n[]byte("), ")\n")
	data, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(data)
}
