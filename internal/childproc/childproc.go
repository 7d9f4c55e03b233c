// Package childproc starts the processes kubox supervises (containerd, the
// kubelet) so that they end with kubox, and finds one a killed kubox left.
package childproc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// Start starts cmd in a process group of its own (a Ctrl-C on kubox's
// terminal reaches kubox, which stops its children in order) with SIGTERM
// as its parent-death signal, and returns a channel that yields Wait's
// result once.
//
// Linux sends the parent-death signal when the thread that forked the
// child exits, not the process: Go ends a thread when a goroutine locked
// to it returns, which some libraries kubox links do (network namespace
// switches). So the child is started and waited for from a goroutine
// locked to its thread for the child's whole life: the thread ends only
// after the child has.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		// Never unlocked: see above.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// StopLeftover stops the process named in pidFile if it still runs and its
// command line contains marker (so a pid reused by another program is left
// alone): SIGTERM, then SIGKILL after grace. Such a process is left when
// kubox was killed and the child outlived it (it ignored or had not yet
// acted on its parent-death signal). It returns the pid it stopped, or 0.
func StopLeftover(pidFile, marker string, grace time.Duration) (int, error) {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		_ = os.Remove(pidFile)
		return 0, nil
	}
	if !running(pid, marker) {
		_ = os.Remove(pidFile)
		return 0, nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for running(pid, marker) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A SIGKILLed process is gone once its parent (init, since kubox is
	// dead) reaps it; wait briefly so its port and sockets are free.
	for i := 0; i < 100 && running(pid, marker); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if running(pid, marker) {
		return pid, fmt.Errorf("process %d from a previous run (%s) does not exit", pid, pidFile)
	}
	_ = os.Remove(pidFile)
	return pid, nil
}

// running tells whether pid is alive (not a zombie) and its command line
// contains marker.
func running(pid int, marker string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	if stat, err := os.ReadFile(filepath.Join(dir, "stat")); err != nil || bytes.Contains(stat, []byte(") Z ")) {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	return err == nil && bytes.Contains(cmdline, []byte(marker))
}

// WritePid records pid in pidFile (atomically, 0600).
func WritePid(pidFile string, pid int) error {
	if err := fsutil.WriteFileAtomic(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", pidFile, err)
	}
	return nil
}

// ExitStatus renders how a child ended for an error message: "status 1",
// "signal killed".
func ExitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "signal " + ws.Signal().String()
		}
		return "status " + strconv.Itoa(ee.ExitCode())
	}
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
