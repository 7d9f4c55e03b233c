// Command daemon is containerd's daemon as kubox carries it (the Makefile
// builds it as the containerd asset): upstream's command with upstream's
// built-in plugins, which also drops its executable's read-only pages once
// started, as kubox does (see internal/memtrim). containerd is mostly idle
// code on a box: its binary's pages were 30 of its 44 MiB of PSS.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
	// The plugins upstream's containerd binary registers.
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	"github.com/kubox/kubox/internal/memtrim"
)

const (
	// settle counts from the daemon's start: kubox starts the kubelet
	// once containerd answers, and pods start soon after.
	settle = 30 * time.Second
	// period: later trims drop what rare work touched since.
	period = 30 * time.Minute
)

func main() {
	// A failed trim changes nothing: containerd only keeps more pages.
	go memtrim.Loop(context.Background(), settle, period, func(int64, error) {})
	if err := command.App().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %s\n", err)
		os.Exit(1)
	}
}
