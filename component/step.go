package component

import (
	"context"
	"errors"
)

var errNotStarted = errors.New("not started")

// Step is setup a component runs once in the background from Start and
// whose result its Ready waits for: work that must wait for something
// (containerd's socket, the node's pod CIDR) but has to be done before the
// component counts as ready. The zero value is ready to use; Go is called
// at most once.
type Step struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error
}

// Go runs step with a child of ctx.
func (s *Step) Go(ctx context.Context, step func(context.Context) error) {
	ctx, s.cancel = context.WithCancelCause(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.err = step(ctx)
	}()
}

// Wait returns the step's result. If ctx ends first, the step is cancelled
// with ctx's cause (context.Cause in the step says why: a start timeout is
// context.DeadlineExceeded), and Wait returns what the step returns then, so
// its error can say what it last saw (a step that returns nil then still
// leaves Wait failing with ctx's cause). The step must return when its ctx
// ends.
func (s *Step) Wait(ctx context.Context) error {
	if s.done == nil {
		return errNotStarted
	}
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		s.cancel(context.Cause(ctx))
		<-s.done
		if s.err != nil {
			return s.err
		}
		return context.Cause(ctx)
	}
}

// Stop cancels the step if it still runs and waits for it to return, or
// for ctx to end (ErrStillRunning).
func (s *Step) Stop(ctx context.Context) error {
	if s.done == nil {
		return nil
	}
	s.cancel(nil)
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ErrStillRunning
	}
}
