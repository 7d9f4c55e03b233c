package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/internal/memtrim"
)

// newKubeletCommand is the hidden verb kubox server runs its kubelet with,
// as a child process (see embedded/kubelet). Its arguments are paths and
// names only; the rest is in the configuration file kubox server wrote.
func newKubeletCommand() *cobra.Command {
	var a kubelet.Args
	cmd := &cobra.Command{
		Use:    "kubelet",
		Short:  "Run the upstream kubelet (kubox server starts it; not for direct use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(50) // as kubox server: see there
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// As kubox server does once ready (see trimAfterReady); the
			// kubelet has registered the node and synced its pods by then.
			go memtrim.Loop(ctx, kubeletTrimSettle, trimPeriod, func(_ int64, err error) {
				if err != nil {
					klog.InfoS("Could not drop unused executable pages", "err", err)
				}
			})
			err := kubelet.Run(ctx, a)
			klog.Flush()
			if err != nil {
				// kubox server reads this last line as the cause.
				return &lineError{line: "kubelet: " + err.Error()}
			}
			return nil
		},
	}
	a.AddFlags(cmd.Flags())
	return cmd
}

// kubeletTrimSettle is when the kubelet child first drops its executable's
// pages, counted from its start.
const kubeletTrimSettle = 30 * time.Second
