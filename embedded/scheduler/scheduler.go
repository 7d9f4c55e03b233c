// Package scheduler runs the upstream kube-scheduler inside kubox.
package scheduler

import (
	"context"
	"fmt"

	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/flags"
)

// Config holds what kubox decides for the scheduler.
type Config struct {
	Kubeconfig  string
	LeaderElect bool
	Extra       map[string]string
}

// Scheduler is the embedded kube-scheduler.
type Scheduler struct {
	cfg  Config
	opts *options.Options
	component.Goroutine
}

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
		"leader-elect":              fmt.Sprint(s.cfg.LeaderElect),
		"profiling":                 "false",
		"secure-port":               "0",
	}
	for k, v := range s.cfg.Extra {
		m[k] = v
	}
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
	s.opts = opts
	return nil
}

func (s *Scheduler) Start(ctx context.Context) error {
	cc, sched, err := app.Setup(ctx, s.opts)
	if err != nil {
		return fmt.Errorf("set up scheduler: %w", err)
	}
	s.Go(ctx, "scheduler", func(ctx context.Context) error { return app.Run(ctx, cc, sched) })
	return nil
}

// Ready returns at once; pods wait in the queue until the scheduler runs.
func (s *Scheduler) Ready(ctx context.Context) error { return nil }

func (s *Scheduler) Stop(ctx context.Context) error {
	if err := s.Goroutine.Stop(ctx); err != nil {
		return fmt.Errorf("scheduler did not stop in time: %w", err)
	}
	return nil
}
