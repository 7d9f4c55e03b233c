package server

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/backup"
)

// A start sweeps the temp files a killed kubox or snapshot save left in
// kubox's own dirs and the snapshot dir, and nothing else: not other
// names, not files in dirs holding others' data (pods, images, etcd), not
// files newer than the process.
func TestStartSweepsOnlyKuboxTempFiles(t *testing.T) {
	c := validConfig(t)
	c.DataDir = t.TempDir()
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	old := time.Now().Add(-time.Hour)
	put := func(path string, size int, aged bool) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if aged {
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	snapDir := backup.DefaultDir(c.DataDir)
	swept := []string{
		put(filepath.Join(c.DataDir, ".join.json.tmp-12345"), 10, true),
		put(filepath.Join(p.PKI, "etcd", ".server.key.tmp-777"), 20, true),
		put(filepath.Join(p.Kubeconfigs, ".admin.kubeconfig.tmp-1"), 30, true),
		put(filepath.Join(p.Bin, ".containerd.tmp-99"), 1000, true),
		put(filepath.Join(snapDir, ".kbsnap-4242.tmp"), 2000, true),
	}
	kept := []string{
		put(filepath.Join(p.Kubelet, "pods", "uid", "volumes", ".data.tmp-1"), 5, true), // a pod's file
		put(filepath.Join(p.ContainerdRoot, "io.containerd", ".x.tmp-2"), 5, true),      // containerd's
		put(filepath.Join(p.Etcd, "member", "wal", ".0.tmp-3"), 5, true),                // etcd's
		put(filepath.Join(c.AirgapImagesDir, ".bundle.tar.tmp-4"), 5, true),             // the operator's drop box
		put(filepath.Join(c.DataDir, "restore-staging", ".marker.tmp-5"), 5, true),      // not a dir of kubox's own files
		put(filepath.Join(snapDir, "manual-box-20260101T000000Z.kbsnap"), 5, true),      // a snapshot
		put(filepath.Join(snapDir, ".notes.tmp-6"), 5, true),                            // not the snapshot pattern
		put(filepath.Join(p.PKI, "ca.key"), 5, true),                                    // not a temp file
		put(filepath.Join(p.PKI, ".ca.key.tmp-8"), 5, false),                            // newer than the process
	}
	var logs bytes.Buffer
	srv, err := New(c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv.created = time.Now().Add(-time.Minute)
	srv.sweepTemp()
	for _, f := range swept {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s not swept (%v)", f, err)
		}
	}
	for _, f := range kept {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s should be kept: %v", f, err)
		}
	}
	if lines := strings.Count(logs.String(), "\n"); lines != 1 || !strings.Contains(logs.String(), "files=5 bytes=3060") {
		t.Errorf("want one line with files=5 bytes=3060, got:\n%s", logs.String())
	}
}

func TestScheduledSnapshotsKeepFiveByDefault(t *testing.T) {
	if c := DefaultConfig(); c.SnapshotRetention != 5 || backup.DefaultRetention != 5 {
		t.Fatalf("default retention %d (backup.DefaultRetention %d), want 5 as documented", c.SnapshotRetention, backup.DefaultRetention)
	}
}
