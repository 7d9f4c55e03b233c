package airgap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestRecord(t *testing.T) {
	r := Record{Path: filepath.Join(t.TempDir(), "airgap", "imported.json")}
	if m, err := r.Load(); err != nil || len(m) != 0 {
		t.Fatalf("missing record: %v %v", m, err)
	}
	a, b := digest.FromString("a"), digest.FromString("b")
	now := time.Now().UTC()
	for _, e := range []RecordEntry{
		{ID: a, File: "/x/a.kbundle", Images: []string{"localhost/a:1"}, ImportedAt: now},
		{ID: b, File: "/x/b.kbundle", ImportedAt: now.Add(time.Second)},
		{ID: a, File: "/x/a-again.kbundle", Images: []string{"localhost/a:1"}, ImportedAt: now.Add(2 * time.Second)},
	} {
		if err := r.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	m, err := r.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[a].File != "/x/a-again.kbundle" || m[b].File != "/x/b.kbundle" {
		t.Fatalf("record: %+v", m)
	}
	if fi, err := os.Stat(r.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file mode: %v %v", fi, err)
	}
	if err := os.WriteFile(r.Path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load(); err == nil || !strings.Contains(err.Error(), "moved aside") {
		t.Fatalf("corrupt record: %v", err)
	}
	if err := r.Add(RecordEntry{ID: b, File: "/x/b.kbundle", ImportedAt: now}); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Load(); err != nil || len(m) != 1 {
		t.Fatalf("record after a corrupt one: %v %v", m, err)
	}
	if aside, _ := filepath.Glob(r.Path + ".old-*"); len(aside) != 1 {
		t.Fatalf("corrupt record not kept aside: %v", aside)
	}
}

func TestIgnoredNames(t *testing.T) {
	for name, want := range map[string]bool{
		"site.kbundle": false, "images.tar.zst": false,
		".site.kbundle.tmp-123": true, "site.kbundle.part": true, "site.kbundle~": true, "x.tmp": true,
	} {
		if ignored(name) != want {
			t.Errorf("ignored(%q) = %v", name, !want)
		}
	}
}
