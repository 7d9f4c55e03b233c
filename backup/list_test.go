package backup

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestListAndPrune(t *testing.T) {
	key, dir := newKey(t), t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(name string, hours int, scheduled bool) string {
		h := testHeader()
		h.Name, h.Scheduled, h.CreatedAt = name, scheduled, base.Add(time.Duration(hours)*time.Hour)
		return writeSnapshot(t, dir, []byte("db "+name), WriteOptions{Header: h, Key: key}).Path
	}
	s1 := write("", 1, true)
	m1 := write("before-upgrade", 2, false)
	s2 := write("", 3, true)
	s3 := write("", 4, true)
	m2 := write("", 5, false)
	s4 := write("", 6, true)
	// Not snapshots, or broken ones.
	os.WriteFile(filepath.Join(dir, ".kbsnap-123.tmp"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600)
	broken := filepath.Join(dir, "broken.kbsnap")
	os.WriteFile(broken, []byte("garbage"), 0o600)
	old := base.Add(-time.Hour)
	os.Chtimes(broken, old, old)

	entries, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range entries {
		paths = append(paths, e.Path)
	}
	if want := []string{s4, m2, s3, s2, m1, s1, broken}; !slices.Equal(paths, want) {
		t.Fatalf("List order:\n got %v\nwant %v", paths, want)
	}
	if entries[6].Err == nil || entries[0].Err != nil {
		t.Errorf("Err fields: broken %v, good %v", entries[6].Err, entries[0].Err)
	}
	if entries[0].Header.Name != "scheduled" || entries[1].Header.Name != "manual" || entries[4].Header.Name != "before-upgrade" {
		t.Errorf("names: %q %q %q", entries[0].Header.Name, entries[1].Header.Name, entries[4].Header.Name)
	}
	if entries[0].Size <= 0 {
		t.Errorf("size %d", entries[0].Size)
	}

	removed, err := Prune(dir, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{s2, s1}; !slices.Equal(removed, want) {
		t.Fatalf("Prune(2, scheduledOnly) removed %v, want %v", removed, want)
	}
	for _, p := range []string{s4, s3, m1, m2, broken} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s should be kept: %v", p, err)
		}
	}

	removed, err = Prune(dir, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{m2, s3, m1}; !slices.Equal(removed, want) {
		t.Fatalf("Prune(1, all) removed %v, want %v", removed, want)
	}
	if _, err := os.Stat(broken); err != nil {
		t.Errorf("Prune removed an unreadable file: %v", err)
	}
	if _, err := Prune(dir, 0, false); err == nil {
		t.Error("Prune(0) succeeded")
	}
}

func TestListMissingDir(t *testing.T) {
	entries, err := List(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("List of a missing dir = %v, %v", entries, err)
	}
}
