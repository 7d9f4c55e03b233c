package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

func TestRoundTrip(t *testing.T) {
	key := newKey(t)
	db := randomBytes(3<<20+12345, 1) // several parts, the last one short
	files, content, modes := testPKI(t)
	dir := filepath.Join(t.TempDir(), "snapshots")

	e := writeSnapshot(t, dir, db, WriteOptions{Header: testHeader(), PKIFiles: files, Key: key})

	if want := `^before-upgrade-box-1-20260304T050607Z\.kbsnap$`; !regexp.MustCompile(want).MatchString(filepath.Base(e.Path)) {
		t.Errorf("file name %s, want %s", filepath.Base(e.Path), want)
	}
	assertMode(t, dir, 0o700)
	assertMode(t, e.Path, 0o600)
	fi, err := os.Stat(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != e.Size {
		t.Errorf("Entry.Size %d, file has %d bytes", e.Size, fi.Size())
	}
	var pkiSize int64
	for _, c := range content {
		pkiSize += int64(len(c))
	}
	h := e.Header
	if h.FormatVersion != FormatVersion || h.Encryption != EncryptionAge || h.Recipient != key.Recipient() ||
		h.EtcdDBSize != int64(len(db)) || h.EtcdDBBLAKE3 != blake3Hex(db) || h.EtcdDBSHA256 != "" || h.PKISize != pkiSize ||
		h.PKIFiles != len(content) || h.EtcdRevision != 12345 || h.Name != "before-upgrade" {
		t.Errorf("header not filled in as expected: %+v", h)
	}

	rh, size, err := ReadHeader(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if rh != h || size != e.Size {
		t.Errorf("ReadHeader = %+v, %d; want %+v, %d", rh, size, h, e.Size)
	}
	vh, err := Verify(e.Path, key, testTrust)
	if err != nil {
		t.Fatal(err)
	}
	if vh != h {
		t.Errorf("Verify header %+v, want %+v", vh, h)
	}

	target := filepath.Join(t.TempDir(), "restore")
	xh, err := Extract(e.Path, key, testTrust, target)
	if err != nil {
		t.Fatal(err)
	}
	if xh != h {
		t.Errorf("Extract header %+v, want %+v", xh, h)
	}
	got, err := os.ReadFile(filepath.Join(target, "etcd.db"))
	if err != nil || !bytes.Equal(got, db) {
		t.Fatalf("extracted etcd.db differs (err %v)", err)
	}
	assertMode(t, filepath.Join(target, "etcd.db"), 0o600)
	for name, want := range content {
		p := filepath.Join(target, "pki", filepath.FromSlash(name))
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("extracted %s differs (err %v)", name, err)
		}
		assertMode(t, p, modes[name])
	}
	assertMode(t, filepath.Join(target, "pki", "etcd"), 0o700)
	assertNoTempLeft(t, filepath.Dir(target))
}

func TestRoundTripInsecurePlaintext(t *testing.T) {
	db := randomBytes(100000, 2)
	e := writeSnapshot(t, t.TempDir(), db, WriteOptions{Header: testHeader(), InsecurePlaintext: true})
	if e.Header.Encryption != EncryptionNone || e.Header.Recipient != "" {
		t.Fatalf("plaintext snapshot not marked in the header: %+v", e.Header)
	}
	if _, err := Verify(e.Path, nil, testTrust); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(e.Path, newKey(t), testTrust); !errors.Is(err, ErrUnencrypted) {
		t.Fatalf("Verify with a key: %v, want ErrUnencrypted", err)
	}
}

func TestWriteRefusesWithoutKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	_, err := Write(t.Context(), dir, bytes.NewReader([]byte("db")), WriteOptions{Header: testHeader()})
	if !errors.Is(err, ErrKeyRequired) {
		t.Fatalf("Write without key: %v, want ErrKeyRequired", err)
	}
	_, err = Write(t.Context(), dir, bytes.NewReader([]byte("db")), WriteOptions{Header: testHeader(), Key: newKey(t), InsecurePlaintext: true})
	if err == nil {
		t.Fatal("Write with key and InsecurePlaintext succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused write created the dir: %v", err)
	}
}

func TestWriteValidates(t *testing.T) {
	key := newKey(t)
	for name, opts := range map[string]WriteOptions{
		"bad name":       {Header: Header{NodeName: "n", Name: "../x"}, Key: key},
		"no node":        {Header: Header{}, Key: key},
		"bad pki name":   {Header: testHeader(), Key: key, PKIFiles: map[string]string{"../ca.key": "/dev/null"}},
		"file and dir":   {Header: testHeader(), Key: key, PKIFiles: map[string]string{"a": "x", "a/b": "y"}},
		"control char":   {Header: Header{NodeName: "n\x1b[2J"}, Key: key},
		"missing pki":    {Header: testHeader(), Key: key, PKIFiles: map[string]string{"ca.crt": "/nonexistent/ca.crt"}},
		"pki not a file": {Header: testHeader(), Key: key, PKIFiles: map[string]string{"d": t.TempDir()}},
	} {
		dir := t.TempDir()
		if _, err := Write(t.Context(), dir, bytes.NewReader([]byte("db")), opts); err == nil {
			t.Errorf("%s: Write succeeded", name)
		}
		assertNoTempLeft(t, dir)
	}
	dir := t.TempDir()
	if _, err := Write(t.Context(), dir, bytes.NewReader(nil), WriteOptions{Header: testHeader(), Key: key}); err == nil {
		t.Error("Write of an empty db succeeded")
	}
	assertNoTempLeft(t, dir)
}

func TestWriteCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &cancelAfter{data: randomBytes(10<<20, 4), cancel: cancel}
	if _, err := Write(ctx, dir, r, WriteOptions{Header: testHeader(), Key: newKey(t)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v, want context.Canceled", err)
	}
	if des, _ := os.ReadDir(dir); len(des) != 0 {
		t.Errorf("cancelled Write left %d files", len(des))
	}
}

// cancelAfter cancels its context once it has given out 1 MiB.
type cancelAfter struct {
	data   []byte
	off    int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.off > 1<<20 {
		c.cancel()
	}
	if c.off == len(c.data) {
		return 0, io.EOF
	}
	n := copy(p, c.data[c.off:])
	c.off += n
	return n, nil
}

func TestSameNameSameSecond(t *testing.T) {
	key, dir := newKey(t), t.TempDir()
	a := writeSnapshot(t, dir, []byte("one"), WriteOptions{Header: testHeader(), Key: key})
	b := writeSnapshot(t, dir, []byte("two"), WriteOptions{Header: testHeader(), Key: key})
	if a.Path == b.Path {
		t.Fatal("second snapshot replaced the first")
	}
	for _, e := range []Entry{a, b} {
		if _, err := Verify(e.Path, key, testTrust); err != nil {
			t.Error(err)
		}
	}
}

func TestPKIFilesFromDir(t *testing.T) {
	files, content, _ := testPKI(t)
	dir := filepath.Dir(files["ca.crt"])
	got, err := PKIFilesFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(content) || got["etcd/server-ca.key"] != files["etcd/server-ca.key"] {
		t.Errorf("PKIFilesFromDir = %v, want %v", got, files)
	}
	if err := os.Symlink("ca.key", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := PKIFilesFromDir(dir); err == nil {
		t.Error("PKIFilesFromDir accepted a symlink")
	}
}

func TestExtractBadFileChangesNothing(t *testing.T) {
	key := newKey(t)
	data := smallSnapshot(t, key)
	data[len(data)-sigBlockLen-20] ^= 1
	p := filepath.Join(t.TempDir(), "bad.kbsnap")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	target := filepath.Join(parent, "restore")
	if _, err := Extract(p, key, testTrust, target); !errors.Is(err, ErrCorrupted) {
		t.Fatalf("Extract of a damaged file: %v, want ErrCorrupted", err)
	}
	if des, _ := os.ReadDir(parent); len(des) != 0 {
		t.Errorf("failed Extract left %v in the parent", des)
	}
	// An existing empty target is also left alone.
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(p, newKey(t), testTrust, target); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Extract with another key: %v, want ErrWrongKey", err)
	}
	if des, _ := os.ReadDir(target); len(des) != 0 {
		t.Errorf("failed Extract wrote %v into the target", des)
	}
}

func TestExtractTarget(t *testing.T) {
	key := newKey(t)
	e := writeSnapshot(t, t.TempDir(), []byte("db"), WriteOptions{Header: testHeader(), Key: key})
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(e.Path, key, testTrust, full); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Extract into a non-empty dir: %v, want fs.ErrExist", err)
	}
	empty := t.TempDir()
	if _, err := Extract(e.Path, key, testTrust, empty); err != nil {
		t.Errorf("Extract into an empty dir: %v", err)
	}
	if _, err := Extract(e.Path, key, testTrust, filepath.Join(t.TempDir(), "no", "parent")); err == nil {
		t.Error("Extract with a missing parent succeeded")
	}
}

// TestEmergencyRecipe opens a snapshot the way the package doc tells a user
// to without kubox: skip the header, age, zstd, tar, concatenate the parts.
func TestEmergencyRecipe(t *testing.T) {
	key := newKey(t)
	db := randomBytes(5<<20, 9)
	e := writeSnapshot(t, t.TempDir(), db, WriteOptions{Header: testHeader(), Key: key})
	data, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	n := 14 + int(binary.BigEndian.Uint32(data[10:14]))
	ids, err := age.ParseIdentities(bytes.NewReader(key.fileContent(testHeader().CreatedAt)))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := age.Decrypt(bytes.NewReader(data[n:len(data)-72]), ids...)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zstd.NewReader(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var joined bytes.Buffer
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if m, _ := filepath.Match("etcd.db.*", hdr.Name); m {
			io.Copy(&joined, tr)
		}
	}
	if !bytes.Equal(joined.Bytes(), db) {
		t.Errorf("concatenated parts differ from the db; entries %v", names)
	}
	if names[len(names)-1] != trailerName {
		t.Errorf("last entry %s, want %s", names[len(names)-1], trailerName)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %#o, want %#o", path, got, want)
	}
}

func assertNoTempLeft(t *testing.T, dir string) {
	t.Helper()
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if de.Name()[0] == '.' {
			t.Errorf("temp file left behind: %s", filepath.Join(dir, de.Name()))
		}
	}
}
