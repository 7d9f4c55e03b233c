package childproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A child ends with its exit status reported once.
func TestStartReportsExit(t *testing.T) {
	exited, err := Start(exec.Command("sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if got := ExitStatus(err); got != "status 3" {
			t.Errorf("exit: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit reported")
	}
	if _, err := Start(exec.Command("/nonexistent/binary")); err == nil {
		t.Error("start of a missing binary succeeded")
	}
}

// A process named in the pid file with the marker is stopped; one without
// it (a reused pid) is left alone.
func TestStopLeftover(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	if pid, err := StopLeftover(pidFile, "x", time.Second); pid != 0 || err != nil {
		t.Fatalf("no pid file: %d %v", pid, err)
	}
	marker := "leftover-" + filepath.Base(dir)
	// Ignores SIGTERM: StopLeftover must fall back to SIGKILL.
	cmd := exec.Command("sh", "-c", "trap '' TERM; while :; do sleep 0.1; done", marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	go cmd.Wait() //nolint:errcheck // reaps the child so it does not stay a zombie
	if err := WritePid(pidFile, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if pid, err := StopLeftover(pidFile, "not-its-command-line", time.Second); pid != 0 || err != nil {
		t.Fatalf("foreign process: %d %v", pid, err)
	}
	if syscall.Kill(cmd.Process.Pid, 0) != nil {
		t.Fatal("a process without the marker was signalled")
	}
	if err := WritePid(pidFile, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pid, err := StopLeftover(pidFile, marker, 300*time.Millisecond)
	if pid != cmd.Process.Pid || err != nil {
		t.Fatalf("leftover: %d %v", pid, err)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file kept: %v", err)
	}
}
