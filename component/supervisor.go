package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"
)

// Supervisor starts components, each once the ones it needs are ready, and
// stops the started ones in reverse order.
type Supervisor struct {
	Components []Component
	// Needs names, by component name, the components that must be ready
	// before a component starts; each must come earlier in Components.
	// A component starts as soon as its needs are ready, so components
	// that do not need each other start side by side. Nil: one at a time,
	// in order, each waiting for the one before it.
	Needs map[string][]string
	Log   *slog.Logger
	// Status, when set, is told which component is starting ("starting
	// etcd (1/9)"): systemd shows it while kubox starts.
	Status func(msg string)

	// started is in Components' order, so Stop goes in reverse of it:
	// whatever a component needs stops after it.
	started []Component
}

// Start initialises every component that has Init, then starts each
// component once its needs are ready and waits for all to be ready. The
// Start calls are made one at a time, from this goroutine; the Ready waits
// overlap. runCtx bounds the components' run; ctx bounds the start itself.
// On error the components already started (Start called) are left for
// Stop.
func (s *Supervisor) Start(ctx, runCtx context.Context) error {
	needs, err := s.needs()
	if err != nil {
		return err
	}
	for _, c := range s.Components {
		if in, ok := c.(Initializer); ok {
			if err := in.Init(ctx); err != nil {
				return fmt.Errorf("init %s: %w", c.Name(), err)
			}
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(s.Components)
	const (
		pending = iota
		starting
		ready
	)
	state := make([]int, n)
	begin := make([]time.Time, n)
	type result struct {
		i   int
		err error
	}
	results := make(chan result, n)
	started := make([]bool, n)
	defer func() {
		s.started = s.started[:0]
		for i, c := range s.Components {
			if started[i] {
				s.started = append(s.started, c)
			}
		}
	}()
	isReady := func(i int) {
		state[i] = ready
		s.logger().Info("component ready", "component", s.Components[i].Name(), "took", time.Since(begin[i]).Round(time.Millisecond))
	}
	seq, left := 0, n
	for {
		// Start, in order, every component whose needs are all ready; one
		// without Ready is ready at once, which may free the next.
		for progress := true; progress; {
			progress = false
			for i, c := range s.Components {
				if state[i] != pending || !allReady(needs[i], func(j int) bool { return state[j] == ready }) {
					continue
				}
				seq++
				if s.Status != nil {
					s.Status(fmt.Sprintf("starting %s (%d/%d)", c.Name(), seq, n))
				}
				begin[i] = time.Now()
				if err := c.Start(runCtx); err != nil {
					return fmt.Errorf("start %s: %w", c.Name(), err)
				}
				started[i], state[i] = true, starting
				if r, ok := c.(Readier); ok {
					go func() { results <- result{i, r.Ready(ctx)} }()
					continue
				}
				isReady(i)
				left--
				progress = true
			}
		}
		if left == 0 {
			return nil
		}
		// Wait for a Ready to return, or a started component to fail.
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(results)}}
		var failers []int
		waiting := -1 // the last started component not yet ready, for the error
		for i, c := range s.Components {
			if !started[i] {
				continue
			}
			if state[i] == starting {
				waiting = i
			}
			if f, ok := c.(Failer); ok {
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(f.Failed())})
				failers = append(failers, i)
			}
		}
		k, v, ok := reflect.Select(cases)
		if k == 0 {
			r := v.Interface().(result)
			if r.err != nil {
				return fmt.Errorf("wait for %s to be ready: %w", s.Components[r.i].Name(), r.err)
			}
			isReady(r.i)
			left--
			continue
		}
		err := errors.New("stopped unexpectedly")
		if ok && !v.IsNil() {
			err = v.Interface().(error)
		}
		f := failers[k-1]
		if state[f] == starting {
			return fmt.Errorf("wait for %s to be ready: %w", s.Components[f].Name(), err)
		}
		return fmt.Errorf("wait for %s to be ready: %s failed: %w", s.Components[waiting].Name(), s.Components[f].Name(), err)
	}
}

// needs maps each component's index to the indexes of the components it
// needs: the one before it when Needs is nil.
func (s *Supervisor) needs() ([][]int, error) {
	out := make([][]int, len(s.Components))
	index := map[string]int{}
	for i, c := range s.Components {
		if s.Needs == nil {
			if i > 0 {
				out[i] = []int{i - 1}
			}
			continue
		}
		for _, name := range s.Needs[c.Name()] {
			j, ok := index[name]
			if !ok {
				return nil, fmt.Errorf("%s needs %s, which does not come before it", c.Name(), name)
			}
			out[i] = append(out[i], j)
		}
		index[c.Name()] = i
	}
	return out, nil
}

func allReady(needs []int, ready func(int) bool) bool {
	for _, j := range needs {
		if !ready(j) {
			return false
		}
	}
	return true
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
