package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newEtcdCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Inspect and change the cluster's etcd: members, space, alarms",
	}
	admin, opts := clusterAdminOpts(cmd)
	promote := &cobra.Command{
		Use:   "promote [NAME]",
		Short: "Make a learner (hot standby) a voting etcd member: NAME, or every learner",
		Long: `Make a learner a voting etcd member.

A second box joins as a learner: it holds a full copy of etcd and runs the
whole stack, but does not vote. Two voters tolerate no loss (either box down
stops writes), so stay with one voter and a learner unless you want both boxes
to be needed. With three boxes, all three vote and any one may fail; a third
box's join promotes the learner by itself.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			done, err := a.Promote(cmd.Context(), name)
			if err != nil {
				return err
			}
			if len(done) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no learner to promote")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "promoted %s to voter\n", strings.Join(done, ", "))
			return nil
		},
	}
	var out *output
	members := &cobra.Command{
		Use:   "members",
		Short: "List etcd members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			ms, err := a.Members(cmd.Context())
			if err != nil {
				return err
			}
			type member struct {
				ID      string   `json:"id"`
				Name    string   `json:"name"`
				Learner bool     `json:"learner"`
				Peers   []string `json:"peerURLs"`
				Clients []string `json:"clientURLs"`
			}
			list := []member{}
			for _, m := range ms {
				list = append(list, member{fmt.Sprintf("%x", m.ID), m.Name, m.IsLearner, m.PeerURLs, m.ClientURLs})
			}
			return out.Print(cmd.OutOrStdout(), list, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tROLE\tPEER URL")
				for _, m := range list {
					role := "voter"
					if m.Learner {
						role = "learner"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.Name, role, strings.Join(m.Peers, ","))
				}
				return tw.Flush()
			})
		},
	}
	out = addOutputFlag(members, "output format: json")
	cmd.AddCommand(promote, members, newEtcdRecoverCommand(opts),
		newEtcdStatusCommand(admin), newEtcdDefragCommand(admin), newEtcdAlarmCommand(admin))
	return cmd
}
