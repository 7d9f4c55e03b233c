package component

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Goroutine runs a component's blocking Run function (an upstream server,
// a reconcile loop) and gives the component its Stop and, where the run can
// end on its own, its Failed. Keep it in a named field, not embedded: a
// component that can fail declares Failed and returns the Goroutine's. The
// zero value is ready to use.
type Goroutine struct {
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
	failed chan error
}

func (g *Goroutine) init() {
	g.once.Do(func() {
		g.done = make(chan struct{})
		g.failed = make(chan error, 1)
	})
}

// Go starts run with a child of ctx. If run returns before Stop, its error
// (or "<name> stopped") is reported on Failed.
func (g *Goroutine) Go(ctx context.Context, name string, run func(context.Context) error) {
	g.init()
	ctx, g.cancel = context.WithCancel(ctx)
	go func() {
		defer close(g.done)
		err := run(ctx)
		if ctx.Err() == nil {
			if err == nil {
				err = fmt.Errorf("%s stopped", name)
			}
			g.failed <- err
		}
	}()
}

// Failed yields the error of a run that ended on its own.
func (g *Goroutine) Failed() <-chan error {
	g.init()
	return g.failed
}

// ErrStillRunning is returned by Stop when run has not returned in time.
var ErrStillRunning = errors.New("still running")

// Stop cancels run and waits for it to return, or for ctx to end.
func (g *Goroutine) Stop(ctx context.Context) error {
	if g.cancel == nil {
		return nil
	}
	g.cancel()
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
		return ErrStillRunning
	}
}
