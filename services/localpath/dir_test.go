package localpath

import (
	"os"
	"path/filepath"
	"testing"
)

// makeDir makes a 0777 directory whatever the umask, accepts one that is
// there, and refuses a symlink in its place (it would lead out of the
// storage dir).
func TestMakeDir(t *testing.T) {
	storage, outside := t.TempDir(), t.TempDir()
	root, err := os.OpenRoot(storage)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	w := &worker{cfg: Config{Dir: storage}, root: root}
	for range 2 {
		if err := w.makeDir("pvc-a_ns_c"); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(storage, "pvc-a_ns_c")); err != nil || fi.Mode().Perm() != volumeMode {
		t.Fatalf("volume dir: %v %v", fi, err)
	}
	if err := os.Symlink(outside, filepath.Join(storage, "pvc-b_ns_c")); err != nil {
		t.Fatal(err)
	}
	if err := w.makeDir("pvc-b_ns_c"); err == nil {
		t.Fatal("a symlink was taken as the volume dir")
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() == volumeMode {
		t.Fatal("the symlink's target was made 0777")
	}
}
