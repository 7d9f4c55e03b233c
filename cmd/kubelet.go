package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/kubox/kubox/embedded/kubelet"
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
				debug.SetGCPercent(startGCPercent) // as kubox server: see there
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// As kubox server does once ready; the kubelet has
			// registered the node and synced its pods by then.
			go settled(ctx, kubeletSettle, slog.Default())
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
