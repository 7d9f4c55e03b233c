// Package component defines the lifecycle every embedded kubox component
// follows, and the supervisor that starts them in dependency order and stops
// them in reverse.
//
// The shape follows etcd's embed package (a Config, one Start, a ready
// signal, a Close) and k0s's component manager (Init, Start, Ready, Stop,
// each with a context).
package component

import (
	"context"
)

// Component is one in-process (or kubox-managed child) part of a node.
type Component interface {
	// Name is a short, stable name used in logs and errors ("etcd", "kubelet").
	Name() string
	// Init prepares files and validates configuration. It must not start
	// long-running work, so a bad configuration fails before anything runs.
	Init(ctx context.Context) error
	// Start begins the component's work and returns once it is under way.
	// ctx bounds the component's whole run: when it is cancelled the
	// component winds down.
	Start(ctx context.Context) error
	// Ready blocks until the component serves, or ctx ends.
	Ready(ctx context.Context) error
	// Stop stops the component and waits for it, bounded by ctx.
	Stop(ctx context.Context) error
}

// Failer is implemented by components whose work can end on its own after
// Start (a server that stops serving). The channel yields at most one error.
type Failer interface {
	Failed() <-chan error
}
