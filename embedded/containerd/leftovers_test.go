package containerd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A fake shim: a shell whose command line names the socket, with a child
// standing in for the container.
func TestKillLeftoverShimsKillsShimAndContainer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := exec.Command("/bin/sh", "-c", `sleep 60 & echo $! > "$2"; wait`, "-address", sock, pidFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var child int
	for i := 0; i < 100 && child == 0; i++ {
		data, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		time.Sleep(20 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("fake container did not start")
	}
	other := filepath.Join(t.TempDir(), "other.sock")
	if n := killLeftoverShims(other, ""); n != 0 {
		t.Fatalf("killed %d processes of another containerd", n)
	}
	// The container is killed first; the shell then exits and cmd.Wait
	// may reap it before its own SIGKILL, so the count can be 1. That both
	// are gone is checked below.
	if n := killLeftoverShims(sock, ""); n < 1 {
		t.Fatalf("killed %d processes, want the shim and its container", n)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("fake shim still running")
	}
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(child, 0); err != nil {
			return
		}
		// A killed child of a dead shell is reaped by init; wait for it.
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); err == nil && strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("fake container still running")
}

// A `runc init` whose shim is gone hangs below init: it is found by its
// binary, kubox's runc, and another runc binary's processes are left alone.
func TestKillLeftoverShimsKillsOrphanedRunc(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dir := t.TempDir()
	runc := filepath.Join(dir, "runc")
	otherRunc := filepath.Join(dir, "other", "runc")
	for _, p := range []string{runc, otherRunc} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(sleep, p); err != nil {
			t.Fatal(err)
		}
	}
	start := func(bin string) (*exec.Cmd, chan struct{}) {
		cmd := exec.Command(bin, "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		return cmd, done
	}
	_, orphanDone := start(runc)
	_, otherDone := start(otherRunc)
	sock := filepath.Join(dir, "containerd.sock")
	if n := killLeftoverShims(sock, runc); n < 1 {
		t.Fatalf("killed %d processes, want the leftover runc", n)
	}
	select {
	case <-orphanDone:
	case <-time.After(5 * time.Second):
		t.Fatal("leftover runc still running")
	}
	select {
	case <-otherDone:
		t.Fatal("killed the runc of another data dir")
	default:
	}
}
