package component

import (
	"context"
)

// OneShot returns a component whose whole work is step, run once after the
// components before it are ready (publish the join bundle, promote this
// box's etcd member). Start runs step in the background, Ready waits for its
// result, so a step that fails fails the start under name; Stop cancels a
// step that still runs and waits for it. step must return when its ctx ends;
// when the start times out, context.Cause(ctx) in step is
// context.DeadlineExceeded.
func OneShot(name string, step func(ctx context.Context) error) Component {
	return &oneShot{name: name, run: step}
}

type oneShot struct {
	name string
	run  func(context.Context) error
	step Step
}

var (
	_ Component = (*oneShot)(nil)
	_ Readier   = (*oneShot)(nil)
)

func (o *oneShot) Name() string                    { return o.name }
func (o *oneShot) Start(ctx context.Context) error { o.step.Go(ctx, o.run); return nil }
func (o *oneShot) Ready(ctx context.Context) error { return o.step.Wait(ctx) }
func (o *oneShot) Stop(ctx context.Context) error  { return o.step.Stop(ctx) }
