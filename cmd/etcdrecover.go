package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubox/kubox/server"
)

func newEtcdRecoverCommand(parent *serverOpts) *cobra.Command {
	var opts *serverOpts
	var force, quiet bool
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Make this box a one-box cluster after the other boxes are lost for good (kubox server stopped)",
		Long: `Make this box a one-box cluster after the other boxes are lost for good.

Use it when the etcd voters this box needs are gone and will not come back: a
two-box site that lost box 1 (box 2, a learner, holds all the data but cannot
write without it), or a three-box cluster that lost two boxes.

Stop kubox on this box first (systemctl stop kubox; the unit keeps pods
running, as kubox server --stop-pods-on-exit=false does). The command then:
  - refuses while a lost box still answers on its etcd peer or client port
    with this cluster's certificates (--force to go on anyway);
  - builds a new one-member etcd cluster from this box's own etcd data,
    keeping every object, and moves the old etcd data dir to
    <data-dir>/etcd.old-<unix time> (never deleted);
  - moves join.json aside, so this box's apiserver uses its own etcd.
Start kubox again: it runs the cluster alone, with its pods as they were.
New boxes join it with "kubox token create" here and "kubox server --join".
An old box started again with its stale data is refused, with a line saying
how to rejoin (move its data dir aside, join with a new token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := opts.load(cmd)
			if err != nil {
				return err
			}
			cfg, err := f.config()
			if err != nil {
				return err
			}
			if serverRunning(cfg.Paths().Lock) {
				return fmt.Errorf("etcd recover: kubox server is running on %s: stop it first (systemctl stop kubox; pods keep running), then run this again", cfg.DataDir)
			}
			release, err := lockDataDir(cfg.Paths().Lock)
			if err != nil {
				return fmt.Errorf("etcd recover: %w", err)
			}
			defer release()
			res, err := server.Recover(cmd.Context(), cfg, server.RecoverOptions{
				Force: force,
				Progress: func(line string) {
					if !quiet {
						fmt.Fprintln(cmd.ErrOrStderr(), "recover: "+line)
					}
				},
			})
			if err != nil {
				return fmt.Errorf("etcd recover: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "recovered: etcd on %s is a one-member cluster with all its data (dropped %s) in %s\n",
				cfg.NodeName, strings.Join(res.Lost, ", "), res.Duration.Round(1e6))
			fmt.Fprintf(out, "the old etcd data is kept at %s\n", res.OldEtcdDir)
			var removes []string
			for _, name := range res.Lost {
				removes = append(removes, "kubox node remove "+name)
			}
			fmt.Fprintf(out, "now start kubox server; then remove the lost nodes (%s) and join new boxes (kubox token create)\n",
				strings.Join(removes, "; "))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&force, "force", false, "recover even though a lost box still answers (stop kubox there first)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	opts = parent.inherit(cmd,
		sharedFlag{name: "node-ip", usage: "this box's IPv4 address (default: the address of the default route's interface)"},
		sharedFlag{name: "etcd-peer-port", usage: "etcd peer port (on --node-ip)"},
	)
	return cmd
}
