// Package scheduler runs the upstream kube-scheduler inside kubox.
//
// Every box runs one, and the Lease kube-system/kube-scheduler decides which
// one schedules (single box included: one code path). Upstream's own
// election exits the process on a lost lease; kubox runs the election
// itself (internal/leader) and, for each term, sets up a fresh scheduler
// (its cache and queue belong to one term) and calls upstream's Run with
// leader-elect off.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/configz"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/flags"
	"github.com/kubox/kubox/internal/leader"
)

// configzName is the name upstream's Run registers its configz entry under.
const configzName = "componentconfig"

// Config holds what kubox decides for the scheduler.
type Config struct {
	Kubeconfig    string
	NodeName      string // start of the lease identity (default: host name)
	LeaseIdentity string // the whole identity, when the caller keeps one (see leader.StableIdentity)
	Extra         map[string]string
	Log           *slog.Logger
}

// Scheduler is the embedded kube-scheduler.
type Scheduler struct {
	cfg      Config
	opts     *options.Options
	election leader.Config
	run      component.Goroutine
}

var (
	_ component.Component = (*Scheduler)(nil)
	_ component.Failer    = (*Scheduler)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Scheduler {
	return &Scheduler{cfg: cfg}
}

func (s *Scheduler) Name() string { return "scheduler" }

// Args are the upstream flags kubox sets.
func (s *Scheduler) Args() []string {
	m := map[string]string{
		"kubeconfig":                s.cfg.Kubeconfig,
		"authentication-kubeconfig": s.cfg.Kubeconfig,
		"authorization-kubeconfig":  s.cfg.Kubeconfig,
		"profiling":                 "false",
		"secure-port":               "0",
	}
	for k, v := range s.cfg.Extra {
		m[k] = v
	}
	// kubox campaigns itself (see the package comment); the other
	// leader-elect-* flags still set the timings and the Lease.
	m["leader-elect"] = "false"
	return flags.Args(m)
}

func (s *Scheduler) Init(ctx context.Context) error {
	opts := options.NewOptions()
	if err := flags.Parse("kube-scheduler", *opts.Flags, s.Args()); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("scheduler feature gates: %w", err)
	}
	// The rest of the configuration is checked by app.Setup at each term.
	rc, err := clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("scheduler kubeconfig %s: %w", s.cfg.Kubeconfig, err)
	}
	s.opts = opts
	s.election, err = leader.Upstream(*opts.LeaderElection, rc, "kube-scheduler",
		leader.KeptOrNew(s.cfg.LeaseIdentity, s.cfg.NodeName), s.log())
	return err
}

// Start campaigns for the lease in the background; the scheduler runs
// while this box holds it.
func (s *Scheduler) Start(ctx context.Context) error {
	s.run.Go(ctx, "scheduler", func(ctx context.Context) error {
		return leader.Run(ctx, s.election, s.term)
	})
	return nil
}

// term schedules until ctx ends (the lease is lost or kubox stops).
func (s *Scheduler) term(ctx context.Context) error {
	cc, sched, err := app.Setup(ctx, s.opts)
	if err != nil {
		return fmt.Errorf("set up scheduler: %w", err)
	}
	// Run registers its configz entry and never removes it; the next
	// term's Run would fail on the duplicate.
	defer configz.Delete(configzName)
	// Run always returns an error ("finished without leader elect"); only
	// one before ctx ends is a failure, and leader.Run tells them apart.
	return app.Run(ctx, cc, sched)
}

// Ready returns at once; pods wait in the queue until a scheduler runs.
func (s *Scheduler) Ready(ctx context.Context) error { return nil }

// Failed reports a scheduler that stopped on its own while it held the
// lease.
func (s *Scheduler) Failed() <-chan error { return s.run.Failed() }

func (s *Scheduler) Stop(ctx context.Context) error {
	if err := s.run.Stop(ctx); err != nil {
		return fmt.Errorf("scheduler did not stop in time: %w", err)
	}
	return nil
}

func (s *Scheduler) log() *slog.Logger {
	l := s.cfg.Log
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "scheduler")
}
