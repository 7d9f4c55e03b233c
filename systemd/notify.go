// Package systemd tells systemd how `kubox server` is doing (sd_notify:
// READY, STATUS, STOPPING, WATCHDOG). Its folder also holds install.sh, which
// writes the kubox.service unit and the killall and uninstall scripts.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages for kubox itself. Its zero value and a
// nil *Notifier do nothing, so code outside systemd (tests, a shell) needs no
// special case.
type Notifier struct {
	socket   string
	watchdog time.Duration
	log      *slog.Logger
}

// FromEnv captures NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID for kubox's
// own use and removes them from the process environment. It must run before
// any component starts: the in-process upstream kubelet sends READY=1 as soon
// as it starts, which would tell systemd that kubox is ready while the node
// is not yet registered, and children (containerd) inherit the environment.
func FromEnv(log *slog.Logger) (*Notifier, error) {
	if log == nil {
		log = slog.Default()
	}
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	// Unsets WATCHDOG_USEC and WATCHDOG_PID, and returns 0 when they are not
	// meant for this process.
	wd, err := daemon.SdWatchdogEnabled(true)
	if err != nil {
		return nil, fmt.Errorf("read systemd's watchdog settings: %w", err)
	}
	n.watchdog = wd
	if err := os.Unsetenv("NOTIFY_SOCKET"); err != nil {
		return nil, fmt.Errorf("unset NOTIFY_SOCKET: %w", err)
	}
	return n, nil
}

// Enabled reports whether systemd is listening.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Watchdog is systemd's watchdog timeout, 0 when off.
func (n *Notifier) Watchdog() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Status sets the one-line status `systemctl status kubox` shows.
func (n *Notifier) Status(status string) { n.send("STATUS=" + status) }

// Ready tells systemd that kubox is up, with a status line.
func (n *Notifier) Ready(status string) { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// Stopping tells systemd that kubox is shutting down, with a status line.
func (n *Notifier) Stopping(status string) {
	n.send(daemon.SdNotifyStopping + "\nSTATUS=" + status)
}

// RunWatchdog pings systemd's watchdog at half its timeout until ctx ends,
// skipping a ping whenever healthy returns an error, so systemd restarts a
// kubox that is wedged rather than one that merely runs. It returns at once
// when the watchdog is off.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func(context.Context) error) {
	if !n.Enabled() || n.watchdog <= 0 {
		return
	}
	every := n.watchdog / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := check(ctx, healthy, every); err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("not pinging systemd's watchdog: unhealthy", "err", err)
		} else {
			n.send(daemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func check(ctx context.Context, healthy func(context.Context) error, timeout time.Duration) error {
	if healthy == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return healthy(ctx)
}

// send writes one datagram to the captured socket, as sd_notify(3) does. A
// failure is logged, never fatal: kubox runs the same without systemd.
func (n *Notifier) send(state string) {
	if !n.Enabled() {
		return
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		n.log.Warn("could not notify systemd", "socket", n.socket, "err", err)
	}
}
