// Package component defines the lifecycle every part of a kubox node
// follows, and the supervisor that starts the parts as their needs are
// ready and stops them in reverse.
//
// The shape follows etcd's embed package (a Config, one Start, a ready
// signal, a Close) and k0s's component manager (Init, Start, Ready, Stop,
// each with a context).
//
// # The contract
//
// The supervisor first calls Init on every component that has it, then
// Start and Ready on each once the components it needs are ready (one at a
// time in order when no needs are given); on stop it calls Stop in reverse
// order on the components it started. What each step may do:
//
//   - Name is required: a short, stable name for logs and errors.
//   - Init is optional (Initializer). It checks the configuration and writes
//     the files the component needs (its config file, its directories). It
//     does not start work, listen or talk to other components: every Init
//     runs before anything starts, so a bad configuration stops kubox
//     before it has changed anything running.
//   - Start is required. It begins the component's work and returns once
//     that is under way: it starts the goroutine or process, binds the
//     listener, and launches the setup that has to wait for something
//     (a pod CIDR, a socket) in the background (Step). It may rely on the
//     components it needs being ready. Its ctx bounds the component's whole
//     run, not the start: when it ends the component winds down.
//   - Ready is optional (Readier). It only waits and reports: it blocks
//     until the component serves (or its setup Step has finished) and
//     returns nil, or an error saying what it last saw when ctx ends first.
//     It has no side effects: it writes nothing and changes nothing. A
//     component without Ready is ready when Start returns.
//   - Stop is required. It ends what Start began and waits for it, bounded
//     by ctx; it is called only after Start was called (even if Start or
//     Ready failed), and must cope with a Start that failed half-way.
//   - Failed is optional (Failer): a component whose work can end on its
//     own after Start (a server that stops serving, a child process that
//     exits) reports that once on the channel, and kubox stops.
//
// Work that runs once and is then done (publish the join bundle, promote
// this box's etcd member) is a OneShot: the step runs from Start and its
// Ready waits for the step's result, so a failed step fails the start
// under its name.
//
// Goroutine and Step are helpers a component keeps in a named field; they
// are not embedded, so that their methods do not become the component's API.
// A component that needs Failed declares it and returns its Goroutine's.
package component

import (
	"context"
)

// Component is one in-process (or kubox-managed child) part of a node. See
// the package documentation for what each method may do.
type Component interface {
	// Name is a short, stable name used in logs and errors ("etcd", "kubelet").
	Name() string
	// Start begins the component's work and returns once it is under way.
	// ctx bounds the component's whole run.
	Start(ctx context.Context) error
	// Stop stops the component and waits for it, bounded by ctx.
	Stop(ctx context.Context) error
}

// Initializer is implemented by components that have something to check or
// prepare before anything starts.
type Initializer interface {
	// Init validates configuration and writes the files the component
	// needs; it must not start work.
	Init(ctx context.Context) error
}

// Readier is implemented by components that are not ready as soon as Start
// returns.
type Readier interface {
	// Ready blocks until the component serves, or ctx ends. It only waits
	// and reports: no side effects.
	Ready(ctx context.Context) error
}

// Failer is implemented by components whose work can end on its own after
// Start (a server that stops serving). The channel yields at most one error.
type Failer interface {
	Failed() <-chan error
}
