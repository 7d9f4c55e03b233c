package backup

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the scheduler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// TestSchedulerRetriesAndPrunes: a failing scheduled snapshot is logged
// loudly and tried again at the next tick; once it works, retention keeps
// the newest scheduled snapshots and never a manual one.
func TestSchedulerRetriesAndPrunes(t *testing.T) {
	root := t.TempDir()
	url, _ := startEtcd(t, filepath.Join(root, "etcd"), "box")
	keyFile := filepath.Join(root, "backup.key")
	if _, err := CreateKeyFiles(keyFile); err != nil {
		t.Fatal(err)
	}
	// The box keeps only the public keys and the signing key: the
	// decrypting identity lives elsewhere.
	offBox := filepath.Join(t.TempDir(), "backup.key")
	if err := os.Rename(keyFile, offBox); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKeyFile(offBox)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := TrustedSigner(offBox)
	if err != nil {
		t.Fatal(err)
	}
	pub, signer, err := LoadWriterKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "snapshots")
	pkiDir := filepath.Join(root, "pki") // missing at first: every tick fails
	ctx := context.Background()

	var logs syncBuffer
	s := NewScheduler(SchedulerConfig{
		Schedule: "@every 1s", Retention: 2, Dir: dir, KeyFile: keyFile,
		Etcd: EtcdEndpoint{URL: url}, PKIDir: pkiDir, NodeName: "box",
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	waitFor := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for logs.count(what) < n {
			if time.Now().After(deadline) {
				t.Fatalf("want %d %q in the log within 20 s; log:\n%s", n, what, logs.b.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("SCHEDULED SNAPSHOT FAILED", 2)
	if es, _ := List(dir); len(es) != 0 {
		t.Fatalf("failed snapshots left files: %+v", es)
	}

	// A manual snapshot, which retention must keep.
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "ca.crt"), []byte("ca"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Save(ctx, SaveOptions{Etcd: EtcdEndpoint{URL: url}, PKIDir: pkiDir, Dir: dir, Recipient: pub.Recipient, Signer: signer, NodeName: "box"}); err != nil {
		t.Fatal(err)
	}
	waitFor("scheduled snapshot saved", 4)
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var scheduled, manual int
	for _, e := range es {
		if e.Err != nil {
			t.Errorf("%s: %v", e.Path, e.Err)
		} else if e.Header.Scheduled {
			scheduled++
			// Made without the identity on the box; read with the one
			// kept off it, and signed by the key it trusts.
			if _, err := Verify(e.Path, key, Trust{Signer: trusted}); err != nil {
				t.Errorf("scheduled snapshot: %v", err)
			}
			if e.Header.Name != "scheduled" {
				t.Errorf("scheduled snapshot named %q", e.Header.Name)
			}
		} else {
			manual++
		}
	}
	if scheduled != 2 || manual != 1 {
		t.Errorf("%d scheduled and %d manual snapshots left; want 2 and 1", scheduled, manual)
	}
	if n := logs.count("retention removed snapshot"); n < 2 {
		t.Errorf("retention removed %d snapshots; want at least 2", n)
	}
}

func TestSchedulerInitRefusesBadConfig(t *testing.T) {
	root := t.TempDir()
	keyFile := filepath.Join(root, "backup.key")
	if _, err := CreateKeyFiles(keyFile); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  SchedulerConfig
		want string
	}{
		{"bad cron", SchedulerConfig{Schedule: "every tuesday", KeyFile: keyFile, Dir: root}, "--snapshot-schedule"},
		{"no key", SchedulerConfig{Schedule: "@hourly", KeyFile: filepath.Join(root, "nope"), Dir: root}, "snapshot key create"},
		{"negative retention", SchedulerConfig{Schedule: "@hourly", Retention: -1, KeyFile: keyFile, Dir: root}, "--snapshot-retention"},
	} {
		err := NewScheduler(c.cfg).Init(context.Background())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	// An identity without the signing key (made before snapshots were
	// signed) does not stop kubox from starting; every tick fails loudly.
	oldKey := filepath.Join(root, "old.key")
	if _, err := WriteKeyFile(oldKey); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	s := NewScheduler(SchedulerConfig{Schedule: "@hourly", KeyFile: oldKey, Dir: root, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := s.Init(context.Background()); err != nil {
		t.Fatalf("old key without signing key: %v", err)
	}
	s.runScheduled(context.Background())
	if logs.count("SCHEDULED SNAPSHOT FAILED") != 1 || logs.count("snapshot key create") == 0 {
		t.Errorf("old key: want a failed tick naming the fix; log:\n%s", logs.b.String())
	}
	// No schedule: nothing to check, nothing to load.
	if err := NewScheduler(SchedulerConfig{KeyFile: filepath.Join(root, "nope")}).Init(context.Background()); err != nil {
		t.Errorf("no schedule: %v", err)
	}
}
