package manifests

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The applications of the apps dir are files named <app>/<file> beside
// the manifests dir's own, and each name leads back to its file.
func TestScanAppsDir(t *testing.T) {
	root := t.TempDir()
	dir, apps := filepath.Join(root, "manifests"), filepath.Join(root, "apps")
	for path, data := range map[string]string{
		filepath.Join(dir, "a.yaml"):                "a",
		filepath.Join(apps, "shop", "deploy.yaml"):  "shop deploy",
		filepath.Join(apps, "shop", ".bundle.json"): "{}",
		filepath.Join(apps, "shop", "notes.txt"):    "x",
		filepath.Join(apps, ".tmp", "x.yaml"):       "hidden app dir",
		filepath.Join(apps, "other", "x.json"):      "other x",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := &worker{cfg: Config{Dir: dir, AppsDir: apps}}
	files, err := w.scan()
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(files))
	if want := []string{"a.yaml", "other/x.json", "shop/deploy.yaml"}; !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for name, want := range map[string]string{"a.yaml": "a", "shop/deploy.yaml": "shop deploy", "other/x.json": "other x"} {
		if data, err := os.ReadFile(w.path(name)); err != nil || string(data) != want {
			t.Errorf("%s: %q %v", name, data, err)
		}
	}
	// Without an apps dir, or with a missing one, only the dir's files.
	w.cfg.AppsDir = filepath.Join(root, "missing")
	if files, err := w.scan(); err != nil || len(files) != 1 {
		t.Fatalf("missing apps dir: %v %v", files, err)
	}
}
