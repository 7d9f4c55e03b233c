package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage the boxes of the cluster",
	}
	admin := clusterAdminFlags(cmd)
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Take a box out of the cluster: its etcd member and its Node",
		Long: `Take a box out of the cluster: remove its etcd member and delete its Node.

Run it on another box. The removed box's kubox stops once its etcd member
notices; to bring it back, move its data dir aside and join it again with a
new token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			what, err := a.RemoveNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s %s\n", what, args[0])
			return nil
		},
	}
	cmd.AddCommand(remove)
	return cmd
}
