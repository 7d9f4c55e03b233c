package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// listen plays systemd's side: a datagram socket, as NOTIFY_SOCKET names.
func listen(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}

func recv(t *testing.T, conn *net.UnixConn, within time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(within))
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", false
		}
		t.Fatal(err)
	}
	return string(buf[:n]), true
}

func TestFromEnvTakesTheSocketAwayFromTheProcess(t *testing.T) {
	path, conn := listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if val, ok := os.LookupEnv(v); ok {
			t.Errorf("%s=%q still set: the kubelet and containerd would inherit it", v, val)
		}
	}
	if !n.Enabled() || n.Watchdog() != 400*time.Millisecond {
		t.Fatalf("enabled %v, watchdog %v; want true, 400ms", n.Enabled(), n.Watchdog())
	}
	n.Status("starting etcd (1/9)")
	n.Ready("kubox is ready")
	n.Stopping("stopping")
	for _, want := range []string{"STATUS=starting etcd (1/9)", "READY=1\nSTATUS=kubox is ready", "STOPPING=1\nSTATUS=stopping"} {
		got, ok := recv(t, conn, 2*time.Second)
		if !ok || got != want {
			t.Fatalf("got %q (received %v), want %q", got, ok, want)
		}
	}
}

func TestWatchdogForAnotherPIDIsIgnored(t *testing.T) {
	path, _ := listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "400000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	n, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Watchdog() != 0 {
		t.Fatalf("watchdog %v for another process; want 0", n.Watchdog())
	}
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	path, conn := listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	var sick atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, func(context.Context) error {
			if sick.Load() {
				return errors.New("apiserver not live")
			}
			return nil
		})
	}()
	for i := 0; i < 3; i++ {
		if got, ok := recv(t, conn, time.Second); !ok || got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q (received %v)", i, got, ok)
		}
	}
	sick.Store(true)
	// At most one ping already on its way; then silence.
	recv(t, conn, 150*time.Millisecond)
	if got, ok := recv(t, conn, 500*time.Millisecond); ok {
		t.Fatalf("pinged %q while unhealthy", got)
	}
	sick.Store(false)
	if got, ok := recv(t, conn, time.Second); !ok || got != "WATCHDOG=1" {
		t.Fatalf("no ping after recovery: %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not return after its context ended")
	}
}

func TestNilNotifierDoesNothing(t *testing.T) {
	var n *Notifier
	n.Status("x")
	n.Ready("x")
	n.Stopping("x")
	n.RunWatchdog(context.Background(), nil) // returns at once
	if n.Enabled() {
		t.Fatal("nil notifier enabled")
	}
}
