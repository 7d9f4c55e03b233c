package backup

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// fixedKeyFile is a test-only key, fixed so that the committed fuzz seeds
// (encrypted to it) stay readable. It protects nothing.
const fixedKeyFile = "# test key\nAGE-SECRET-KEY-1GQW5TVXVKYR8ESVFF539ZY57SRL24F9AMRK352M86KTETMHHHQ3SX7Y8SZ\n"

func fixedKey(t testing.TB) *Key {
	t.Helper()
	k, err := parseKey([]byte(fixedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testSigner is a fixed test-only signing key (so the committed fuzz seeds
// stay valid), and testTrust trusts it. They protect nothing.
var (
	testSigner = &SigningKey{priv: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}
	testTrust  = Trust{Signer: testSigner.Public()}
)

func newKey(t testing.TB) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testPKI writes a small PKI tree and returns it as WriteOptions.PKIFiles
// along with the expected contents and modes.
func testPKI(t testing.TB) (map[string]string, map[string][]byte, map[string]os.FileMode) {
	t.Helper()
	dir := t.TempDir()
	content := map[string][]byte{
		"ca.crt":                 []byte("-----BEGIN CERTIFICATE-----\nfake ca\n-----END CERTIFICATE-----\n"),
		"ca.key":                 []byte("-----BEGIN EC PRIVATE KEY-----\nfake key\n-----END EC PRIVATE KEY-----\n"),
		"sa.key":                 randomBytes(300, 7),
		"encryption-config.yaml": []byte("kind: EncryptionConfiguration\n"),
		"etcd/server-ca.key":     randomBytes(120, 8),
		"empty":                  {},
	}
	modes := map[string]os.FileMode{}
	files := map[string]string{}
	for name, data := range content {
		mode := os.FileMode(0o600)
		if filepath.Ext(name) == ".crt" {
			mode = 0o644
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		modes[name], files[name] = mode, p
	}
	return files, content, modes
}

func testHeader() Header {
	return Header{
		ClusterID:    "c0ffee00-1111-2222-3333-444455556666",
		NodeName:     "box-1",
		CreatedAt:    time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		EtcdRevision: 12345,
		KuboxVersion: "v0.1.0-test",
		Name:         "before-upgrade",
	}
}

// writeSnapshot writes a snapshot of db into dir and returns its entry,
// signed by testSigner unless opts names another signer.
func writeSnapshot(t testing.TB, dir string, db []byte, opts WriteOptions) Entry {
	t.Helper()
	if opts.Signer == nil {
		opts.Signer = testSigner
	}
	e, err := Write(context.Background(), dir, bytes.NewReader(db), opts)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return e
}

// smallSnapshot returns the bytes of a small encrypted snapshot and its key.
func smallSnapshot(t testing.TB, key *Key) []byte {
	t.Helper()
	files, _, _ := testPKI(t)
	small := map[string]string{"ca.crt": files["ca.crt"], "ca.key": files["ca.key"]}
	e := writeSnapshot(t, t.TempDir(), randomBytes(1500, 3), WriteOptions{Header: testHeader(), PKIFiles: small, Key: key})
	data, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// verifyBytes runs the reader on data, as Verify does on a file.
func verifyBytes(data []byte, key *Key) (Header, error) {
	return readSnapshot(bytes.NewReader(data), key, testTrust, discard{})
}

func blake3Hex(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}
