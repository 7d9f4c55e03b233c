package fsutil

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tempFile makes a temp file the way writeAtomic names them.
func tempFile(t *testing.T, dir, base string, size int) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

func TestSweepTempRemovesOnlyOurOldUnlockedTempFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	age := func(p string) string {
		t.Helper()
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		return age(p)
	}
	stale := []string{
		age(tempFile(t, dir, "join.json", 100)),
		age(tempFile(t, filepath.Join(dir, "pki", "etcd"), "server.key", 20)),
	}
	kept := []string{
		tempFile(t, dir, "lease-identity", 10), // written after the start
		write(filepath.Join(dir, "ca.key")),
		write(filepath.Join(dir, ".ca.key.tmp")),           // no digits: not os.CreateTemp's
		write(filepath.Join(dir, "ca.key.tmp-123")),        // no leading dot
		write(filepath.Join(dir, ".ca.key.tmp-123.bak")),   // not the end of the name
		write(filepath.Join(dir, "ca.key.old-1700000000")), // moved aside: an operator's way back
	}
	// A temp file someone is still writing (flock held) stays.
	held := age(tempFile(t, dir, "busy", 5))
	f, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, held)
	// A dir named like a temp file (a staging dir) is not a file.
	stagingDir := filepath.Join(dir, ".etcd.tmp-42")
	if err := os.Mkdir(stagingDir, 0o700); err != nil {
		t.Fatal(err)
	}
	age(stagingDir)
	kept = append(kept, stagingDir)
	// A symlink named like one is not followed nor removed.
	link := filepath.Join(dir, ".x.tmp-7")
	if err := os.Symlink(kept[1], link); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, link)

	start := time.Now().Add(-time.Minute)
	s, err := SweepTemp(dir, true, IsTempName, start)
	if err != nil {
		t.Fatal(err)
	}
	if s.Files != 2 || s.Bytes != 120 {
		t.Errorf("swept %d files, %d bytes; want 2, 120", s.Files, s.Bytes)
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s not swept: %v", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s should be kept: %v", p, err)
		}
	}
}

func TestSweepTempNotRecursiveAndMissingDir(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	top := tempFile(t, dir, "a", 1)
	deep := tempFile(t, filepath.Join(dir, "sub"), "b", 1)
	for _, p := range []string{top, deep} {
		os.Chtimes(p, old, old)
	}
	s, err := SweepTemp(dir, false, IsTempName, time.Now())
	if err != nil || s.Files != 1 {
		t.Fatalf("SweepTemp = %+v, %v", s, err)
	}
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	sort.Strings(left)
	if !slices.Equal(left, []string{strings.TrimPrefix(deep, dir)}) {
		t.Fatalf("left %v", left)
	}
	if s, err := SweepTemp(filepath.Join(dir, "none"), true, IsTempName, time.Now()); err != nil || s.Files != 0 {
		t.Fatalf("missing dir: %+v, %v", s, err)
	}
}
