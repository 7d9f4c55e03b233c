package leader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A box keeps its identity across restarts (so it renews its own lease at
// once after a crash), and a renamed node gets a new one.
func TestStableIdentity(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lease-identity")
	first, err := StableIdentity(file, "box1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, "box1_") || len(first) <= len("box1_") {
		t.Fatalf("identity %q, want box1_<random>", first)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again, err := StableIdentity(file, "box1")
	if err != nil || again != first {
		t.Fatalf("second call: %q, %v; want the kept %q", again, err, first)
	}
	renamed, err := StableIdentity(file, "box9")
	if err != nil || !strings.HasPrefix(renamed, "box9_") || renamed == first {
		t.Fatalf("after a rename: %q, %v; want a new box9_ identity", renamed, err)
	}
	other, _ := StableIdentity(filepath.Join(t.TempDir(), "lease-identity"), "box1")
	if other == first {
		t.Fatal("two data dirs got the same identity")
	}
}
