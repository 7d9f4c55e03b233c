package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kubox/kubox/internal/memtrim"
	"github.com/kubox/kubox/server"
)

// A start allocates and touches much that an idle node never needs again.
// Once a process has settled, kubox collects garbage more often (a process
// idles at about live heap x (1 + GOGC/100)) and drops the pages of its
// executable that the start touched (see internal/memtrim). Measured with
// BenchmarkIdleMemory on a fresh node, idle PSS of kubox and its children
// (no pods / 10 pods): 431.7 / 461.0 MiB before; dropping the executable's
// pages, 362.0 / 413.8 MiB; with GOGC 25 once settled and containerd
// trimmed too (embedded/containerd/daemon), 322.3 / 373.0 MiB. The idle
// CPU of the node stayed within this loaded machine's noise (3-4 s in 60 s).
const (
	startGCPercent = 50
	idleGCPercent  = 25
	// serverSettle counts from the node's readiness (the controllers'
	// first sync is done by then), kubeletSettle from the kubelet's start.
	serverSettle  = 20 * time.Second
	kubeletSettle = 30 * time.Second
	// trimPeriod: later trims drop what rare work (a certificate
	// renewal, a snapshot, a burst of pod starts) touched since.
	trimPeriod = 30 * time.Minute
)

// settled waits for delay, then lowers the GC target (unless GOGC is set)
// and drops the executable's pages, again every trimPeriod, until ctx ends.
func settled(ctx context.Context, delay time.Duration, log *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(idleGCPercent)
	}
	// Give the start's garbage back now: the runtime would otherwise return
	// the memory above the new, lower target only slowly.
	debug.FreeOSMemory()
	memtrim.Loop(ctx, 0, trimPeriod, func(dropped int64, err error) {
		if err != nil {
			log.Warn("could not drop unused executable pages", "err", err)
			return
		}
		log.Debug("dropped executable pages", "bytes", dropped)
	})
}

// settleWhenReady is the server's notifier; it also starts settled once the
// node is ready.
type settleWhenReady struct {
	server.Notifier
	ctx  context.Context
	log  *slog.Logger
	once sync.Once
}

func (s *settleWhenReady) Ready(msg string) {
	s.Notifier.Ready(msg)
	s.once.Do(func() { go settled(s.ctx, serverSettle, s.log) })
}
