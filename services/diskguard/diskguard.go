// Package diskguard stops kubox cleanly before its data dir's disk is full.
//
// etcd treats a failed WAL or database write as fatal: on a full disk it
// would end the whole process without a clean stop. The guard polls the
// free space of the data dir's filesystem and, once it falls below the
// floor (diskspace.Floor: 2% of the filesystem, at least one 64 MiB WAL
// segment, at most 256 MiB), reports a failure: the supervisor then stops
// every component, etcd included, and kubox exits non-zero with one line.
// A start needs the floor plus the WAL segment etcd gives back when it
// stops and takes again when it opens, so a stopped kubox stays down until
// room is freed, and then the next start (systemd restarts kubox) works.
package diskguard

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/diskspace"
)

// DefaultInterval is how often the free space is measured: a statfs call
// costs microseconds, and at 1 s even a disk filling at 100 MiB/s leaves
// the floor's worth of time to stop.
const DefaultInterval = time.Second

// Config says which dir to guard.
type Config struct {
	Dir      string        // the data dir
	Interval time.Duration // 0: DefaultInterval
	// Measure measures Dir's filesystem (tests fake it); nil:
	// diskspace.Measure, with the device named from the mount table only
	// when the guard acts.
	Measure func(dir string) (diskspace.Usage, error)
	Log     *slog.Logger
}

// Guard is the "disk" component: first in the start order, so it watches
// while the rest starts, and last to stop.
type Guard struct {
	cfg Config
	run component.Goroutine
}

var (
	_ component.Component   = (*Guard)(nil)
	_ component.Initializer = (*Guard)(nil)
	_ component.Failer      = (*Guard)(nil)
)

// New returns the guard for cfg.
func New(cfg Config) *Guard {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Guard{cfg: cfg}
}

func (g *Guard) Name() string { return "disk" }

// Init refuses to start with less than a start needs (see
// diskspace.StartNeeds).
func (g *Guard) Init(context.Context) error {
	u, err := g.measure()
	if err != nil {
		return err
	}
	return g.named(u.CheckStart())
}

// Start polls until the free space falls below the floor, which it then
// reports on Failed.
func (g *Guard) Start(ctx context.Context) error {
	g.run.Go(ctx, "disk guard", g.watch)
	return nil
}

func (g *Guard) Stop(ctx context.Context) error { return g.run.Stop(ctx) }
func (g *Guard) Failed() <-chan error           { return g.run.Failed() }

func (g *Guard) watch(ctx context.Context) error {
	var lowErr, lastErr error
	warned := false
	err := wait.PollUntilContextCancel(ctx, g.cfg.Interval, true, func(context.Context) (bool, error) {
		u, err := g.measure()
		if err != nil {
			// Not knowing is no reason to stop the box: say so once.
			if lastErr == nil || lastErr.Error() != err.Error() {
				g.cfg.Log.Warn("cannot measure the data dir's free space", "dir", g.cfg.Dir, "err", err)
			}
			lastErr = err
			return false, nil
		}
		lastErr = nil
		if lowErr = g.named(u.CheckFloor()); lowErr != nil {
			return true, nil
		}
		// Twice the floor: warn once per descent, while there is still time
		// to act.
		if nearly := u.Free < 2*u.Floor(); nearly != warned {
			warned = nearly
			if nearly {
				g.cfg.Log.Warn("the data dir's disk is nearly full: kubox stops below the floor", "dir", g.cfg.Dir,
					"free", diskspace.Human(u.Free), "floor", diskspace.Human(u.Floor()))
			}
		}
		return false, nil
	})
	if lowErr != nil {
		g.cfg.Log.Error("stopping kubox: " + lowErr.Error())
		return lowErr
	}
	return err
}

func (g *Guard) measure() (diskspace.Usage, error) {
	if g.cfg.Measure != nil {
		return g.cfg.Measure(g.cfg.Dir)
	}
	return diskspace.Measure(g.cfg.Dir)
}

// named completes a *diskspace.LowError with the device, read from the
// mount table only now.
func (g *Guard) named(err error) error {
	var le *diskspace.LowError
	if errors.As(err, &le) && le.Device == "" && g.cfg.Measure == nil {
		if named, nerr := diskspace.Of(g.cfg.Dir); nerr == nil {
			le.Device = named.Device
		}
	}
	return err
}
