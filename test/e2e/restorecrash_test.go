package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/test/harness"
)

// TestRestoreCrash cuts `kubox restore` off after each step of its data dir
// swap (SIGKILL through the test-only crash hook) and starts kubox server
// (or kubox restore) again: the cluster that comes up is never a new one.
// Its CA is the original one, and it holds either the old state (both
// ConfigMaps) or the restored one (only the one in the snapshot); no
// staging dir (plaintext keys, etcd.db) or journal is left beside the data
// dir. One snapshot and a control-plane-only node keep it short.
func TestRestoreCrash(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--disable-agent")
	keyFile := filepath.Join(n.Root, "backup.key")
	snapDir := filepath.Join(n.Root, "snapshots")
	origKubeconfig := filepath.Join(n.Root, "orig.kubeconfig")
	mustKubox(t, env, "snapshot", "key", "create", "--key-file", keyFile)

	// kubectl with the first start's kubeconfig: it only works against a
	// cluster with the original CA.
	kubectl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, env.Kubectl, append([]string{"--kubeconfig", origKubeconfig}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", errors.New(strings.TrimSpace(errb.String()))
		}
		return strings.TrimSpace(out.String()), nil
	}
	// start runs kubox server and returns what it logged while starting.
	start := func(t *testing.T) string {
		t.Helper()
		before, _ := os.ReadFile(n.LogPath)
		n.Start()
		waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
		defer waitCancel()
		if err := n.WaitAPIReady(waitCtx); err != nil {
			t.Fatal(err)
		}
		all, _ := os.ReadFile(n.LogPath)
		return string(all[len(before):])
	}
	stop := func(t *testing.T) {
		t.Helper()
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop kubox: %v", err)
		}
	}

	var origCA []byte
	var snap string
	harness.Phase(t, "setup", func(t *testing.T) {
		start(t)
		var err error
		if origCA, err = os.ReadFile(filepath.Join(n.DataDir, "pki", "ca.crt")); err != nil {
			t.Fatal(err)
		}
		kc, err := os.ReadFile(n.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(origKubeconfig, kc, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := kubectl("create", "configmap", "crash-first", "--from-literal=k=v"); err != nil {
			t.Fatal(err)
		}
		out := mustKubox(t, env, "snapshot", "save", "-o", "json", "--data-dir", n.DataDir, "--snapshot-dir", snapDir, "--key-file", keyFile)
		var saved struct{ Path string }
		if err := json.Unmarshal([]byte(out), &saved); err != nil {
			t.Fatalf("snapshot save -o json: %v\n%s", err, out)
		}
		snap = saved.Path
		if _, err := kubectl("create", "configmap", "crash-second", "--from-literal=k=v"); err != nil {
			t.Fatal(err)
		}
		stop(t)
	})

	restoreArgs := []string{"restore", "-q", "--snapshot", snap, "--key-file", keyFile, "--data-dir", n.DataDir}
	parent := filepath.Dir(n.DataDir)
	restoreLeftovers := func() []string {
		des, _ := os.ReadDir(parent)
		var out []string
		for _, de := range des {
			if name := de.Name(); strings.HasPrefix(name, ".data.restore") || strings.HasPrefix(name, "..data.restore") {
				out = append(out, name)
			}
		}
		return out
	}

	for _, c := range []struct {
		step string
		// again: recover with kubox restore (no crash) before the start.
		again bool
		// restored: the restore is finished (only crash-first), else undone.
		restored bool
		// logged: what the recovery says.
		logged string
	}{
		{step: "staging", logged: "undid an interrupted restore"},
		{step: "extracted", logged: "undid an interrupted restore"},
		{step: "staged", restored: true, logged: "finished an interrupted restore"},
		{step: "aside", restored: true, logged: "finished an interrupted restore"},
		{step: "swapped", restored: true, logged: "had already put its data in place"},
		{step: "aside", again: true, restored: true, logged: "finished an interrupted restore"},
	} {
		name := "crash-after-" + c.step
		if c.again {
			name += "-then-restore"
		}
		harness.Phase(t, name, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, env.Bin, restoreArgs...)
			cmd.Env = append(os.Environ(), backup.CrashAfterEnv+"="+c.step)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("restore with the crash hook at %s: %v, want a SIGKILL; output %q", c.step, err, out)
			}
			_, dataErr := os.Stat(n.DataDir)
			left := restoreLeftovers()
			t.Logf("cut after %s: data dir present: %v; beside it: %v", c.step, dataErr == nil, left)
			if len(left) == 0 {
				t.Errorf("no journal beside the data dir after a crash at %s", c.step)
			}
			if c.step == "aside" && dataErr == nil {
				t.Errorf("data dir still there after a crash between the renames")
			}

			var logged string
			if c.again {
				out, errOut, code := kubox(t, env, restoreArgs...)
				if code != 0 {
					t.Fatalf("restore after a crash at %s: exit %d\n%s%s", c.step, code, out, errOut)
				}
				if !strings.Contains(errOut, c.logged) {
					t.Errorf("restore does not say what it did about the interrupted one (want %q): %q", c.logged, errOut)
				}
				logged = start(t)
			} else {
				logged = start(t)
				if !strings.Contains(logged, c.logged) {
					t.Errorf("server log lacks %q:\n%s", c.logged, logged)
				}
			}
			ca, err := os.ReadFile(filepath.Join(n.DataDir, "pki", "ca.crt"))
			if err != nil || !bytes.Equal(ca, origCA) {
				t.Fatalf("after a crash at %s the cluster's CA is not the original one (%v): a new cluster", c.step, err)
			}
			got, err := kubectl("get", "configmaps", "-n", "default", "crash-first", "crash-second", "--ignore-not-found", "-o", "name")
			if err != nil {
				t.Fatalf("kubectl with the original kubeconfig: %v", err)
			}
			want := "configmap/crash-first\nconfigmap/crash-second"
			if c.restored {
				want = "configmap/crash-first"
			}
			if got != want {
				t.Errorf("after a crash at %s the cluster holds %q, want %q", c.step, got, want)
			}
			if left := restoreLeftovers(); len(left) > 0 {
				t.Errorf("restore leftovers beside the data dir: %v", left)
			}
			if c.restored {
				// Back to the old state for the next round.
				if _, err := kubectl("create", "configmap", "crash-second", "--from-literal=k=v"); err != nil {
					t.Fatal(err)
				}
			}
			stop(t)
		})
	}

	harness.Phase(t, "new-box-refuses", func(t *testing.T) {
		// A restore onto a box without a cluster, cut off before its data
		// was complete: kubox server (the unit is enabled) must not make a
		// new cluster there, and the plaintext goes.
		fresh := filepath.Join(n.Root, "fresh", "data")
		args := []string{"restore", "-q", "--snapshot", snap, "--key-file", keyFile, "--data-dir", fresh}
		cmd := exec.CommandContext(ctx, env.Bin, args...)
		cmd.Env = append(os.Environ(), backup.CrashAfterEnv+"=extracted")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("restore with the crash hook ran to the end: %q", out)
		}
		srvCtx, srvCancel := context.WithTimeout(ctx, time.Minute)
		defer srvCancel()
		srv := exec.CommandContext(srvCtx, env.Bin, "server", "--disable-agent", "--data-dir", fresh, "--run-dir", filepath.Join(n.Root, "fresh", "run"))
		var errb bytes.Buffer
		srv.Stderr = &errb
		err := srv.Run()
		line := strings.TrimSpace(errb.String())
		if err == nil || !strings.Contains(line, "run kubox restore again") || strings.Contains(line, "\n") {
			t.Errorf("kubox server after an interrupted restore onto a new box: %v, %q; want one line refusing", err, line)
		} else {
			t.Logf("kubox server refused: %s", line)
		}
		if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("kubox server made a data dir: %v", err)
		}
		des, _ := os.ReadDir(filepath.Dir(fresh))
		for _, de := range des {
			if strings.HasPrefix(de.Name(), ".data.restore-") || strings.HasPrefix(de.Name(), "..data.restore-") {
				t.Errorf("staging dir %s (plaintext keys) kept", de.Name())
			}
		}
		mustKubox(t, env, args...)
		if _, err := os.Stat(filepath.Join(fresh, "pki", "ca.crt")); err != nil {
			t.Errorf("restore after the refusal: %v", err)
		}
		if des, _ := os.ReadDir(filepath.Dir(fresh)); len(des) != 1 {
			t.Errorf("beside the restored data dir: %v, want nothing", des)
		}
	})

	harness.Phase(t, "old-data-kept", func(t *testing.T) {
		// Every finished restore moved the data dir before it aside.
		var aside int
		des, _ := os.ReadDir(parent)
		for _, de := range des {
			if strings.HasPrefix(de.Name(), "data.old-") {
				aside++
			}
		}
		if aside != 5 {
			t.Errorf("%d data.old-* dirs, want one per finished restore (5)", aside)
		}
	})
}
