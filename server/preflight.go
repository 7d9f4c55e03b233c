package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock is an exclusive hold on a data dir, so two kubox processes never run
// on the same state.
type Lock struct{ f *os.File }

// AcquireLock takes the data dir's lock file, or says which process holds it.
func AcquireLock(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir is in use by another kubox (pid %s, lock %s): stop it first or use another --data-dir", strings.TrimSpace(string(holder)), path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
	}
}

// CheckPorts fails on the first port that something else already holds.
func (c *Config) CheckPorts() error {
	for _, p := range c.Ports() {
		addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if errors.Is(err, unix.EADDRINUSE) {
				return fmt.Errorf("port %d (%s) is already in use: stop what holds it or set %s", p.Port, p.What, p.Flag)
			}
			return fmt.Errorf("listen on %s (%s): %w", addr, p.What, err)
		}
		l.Close()
	}
	return nil
}

// HasCapSysResource tells whether this process may lower OOM scores below
// zero; containerd must be told when it may not.
func HasCapSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	const bit = unix.CAP_SYS_RESOURCE
	return data[bit/32].Effective&(1<<(bit%32)) != 0
}

// OwnOOMScoreAdj is this process's OOM score adjustment, which its
// children inherit.
func OwnOOMScoreAdj() (int32, error) {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, fmt.Errorf("read own OOM score: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse own OOM score %q: %w", data, err)
	}
	return int32(v), nil
}
