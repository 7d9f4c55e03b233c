package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"
)

// Supervisor starts components in order, waiting for each to be ready before
// the next, and stops the started ones in reverse.
type Supervisor struct {
	Components []Component
	Log        *slog.Logger
	// Status, when set, is told which component is starting ("starting
	// etcd (1/9)"): systemd shows it while kubox starts.
	Status func(msg string)

	started []Component
}

// Start initialises every component that has Init, then starts them one by
// one, waiting for each that has Ready. runCtx bounds the components' run;
// ctx bounds the start itself. On error the components already started
// (Start called) are left for Stop.
func (s *Supervisor) Start(ctx, runCtx context.Context) error {
	for _, c := range s.Components {
		if in, ok := c.(Initializer); ok {
			if err := in.Init(ctx); err != nil {
				return fmt.Errorf("init %s: %w", c.Name(), err)
			}
		}
	}
	for i, c := range s.Components {
		if s.Status != nil {
			s.Status(fmt.Sprintf("starting %s (%d/%d)", c.Name(), i+1, len(s.Components)))
		}
		begin := time.Now()
		if err := c.Start(runCtx); err != nil {
			return fmt.Errorf("start %s: %w", c.Name(), err)
		}
		s.started = append(s.started, c)
		if err := s.ready(ctx, c); err != nil {
			return fmt.Errorf("wait for %s to be ready: %w", c.Name(), err)
		}
		s.logger().Info("component ready", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
	}
	return nil
}

// ready waits for c to be ready, and fails early if c, or a component
// started before it (a guard, etcd), fails meanwhile. A component without
// Ready is ready once started.
func (s *Supervisor) ready(ctx context.Context, c Component) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	if r, ok := c.(Readier); ok {
		go func() { done <- r.Ready(ctx) }()
	} else {
		done <- nil
	}
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(done)}}
	var names []string
	for _, sc := range s.started {
		if f, ok := sc.(Failer); ok {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(f.Failed())})
			names = append(names, sc.Name())
		}
	}
	i, v, ok := reflect.Select(cases)
	if i == 0 {
		if v.IsNil() {
			return nil
		}
		return v.Interface().(error)
	}
	err := errors.New("stopped unexpectedly")
	if ok && !v.IsNil() {
		err = v.Interface().(error)
	}
	if names[i-1] == c.Name() {
		return err
	}
	return fmt.Errorf("%s failed: %w", names[i-1], err)
}

// Wait blocks until ctx ends (nil) or a started component fails (its error).
func (s *Supervisor) Wait(ctx context.Context) error {
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	names := []string{""}
	for _, c := range s.started {
		if f, ok := c.(Failer); ok {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(f.Failed())})
			names = append(names, c.Name())
		}
	}
	i, v, ok := reflect.Select(cases)
	if i == 0 {
		return nil
	}
	err := errors.New("stopped unexpectedly")
	if ok && !v.IsNil() {
		err = v.Interface().(error)
	}
	return fmt.Errorf("%s: %w", names[i], err)
}

// Stop stops the started components in reverse order. Each gets a share of
// the time left in ctx; a component that does not stop in time is reported
// and the rest are still stopped.
func (s *Supervisor) Stop(ctx context.Context) error {
	var errs []error
	for i := len(s.started) - 1; i >= 0; i-- {
		c := s.started[i]
		begin := time.Now()
		stopCtx, cancel := context.WithTimeout(ctx, shareOf(ctx, i+1))
		err := c.Stop(stopCtx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", c.Name(), err))
			s.logger().Error("component did not stop cleanly", "component", c.Name(), "err", err)
			continue
		}
		s.logger().Info("component stopped", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
	}
	s.started = nil
	return errors.Join(errs...)
}

// shareOf gives one of n remaining components an even share of ctx's time,
// but never less than a few seconds so a quick component is not starved.
func shareOf(ctx context.Context, n int) time.Duration {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 30 * time.Second
	}
	share := time.Until(deadline) / time.Duration(n)
	if share < 3*time.Second {
		share = 3 * time.Second
	}
	return share
}

func (s *Supervisor) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}
