package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/kubox/kubox/embedded/etcd"
	"github.com/kubox/kubox/server"
)

// The etcd space verbs: status, defrag, alarm list|disarm.

func ibytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func newEtcdStatusCommand(admin func(*cobra.Command) (*server.Admin, error)) *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show etcd's members, leader, database size against the quota, fragmentation and alarms",
		Long: `Show etcd's members with their database size (what etcd checks against the
quota), the part in use, the quota, the free share (what a defragmentation
gives back), who leads, and the raised alarms. NOSPACE means the database
reached the quota and writes are refused: kubox server frees room and
disarms it by itself (see "kubox etcd alarm").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			st, err := a.EtcdStatus(cmd.Context())
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), st, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tDB SIZE\tIN USE\tQUOTA\tFREE\tVERSION")
				for _, m := range st.Members {
					role := "voter"
					if m.Learner {
						role = "learner"
					}
					if m.Leader {
						role += ",leader"
					}
					if m.Error != "" {
						fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", m.Name, role, m.Error)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\n", m.Name, role, ibytes(m.Size), ibytes(m.InUse), ibytes(m.Quota), 100*m.Fragmentation, m.Version)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if st.Leader == "" {
					fmt.Fprintln(w, "leader: none")
				}
				if len(st.Alarms) == 0 {
					fmt.Fprintln(w, "alarms: none")
				}
				for _, al := range st.Alarms {
					fmt.Fprintf(w, "ALARM %s on %s\n", al.Alarm, al.Member)
				}
				return nil
			})
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}

func newEtcdDefragCommand(admin func(*cobra.Command) (*server.Admin, error)) *cobra.Command {
	var out *output
	var quiet bool
	cmd := &cobra.Command{
		Use:   "defrag",
		Short: "Defragment this box's etcd member now, giving freed pages back to the disk",
		Long: `Defragment this box's etcd member (only this one).

Compaction (etcd's hourly one, the apiserver's every 5 minutes) frees pages
inside the database file but never shrinks it, and etcd checks its quota
against that size; a defragmentation rewrites the file without the free
pages. The member serves no reads or writes while it runs (about a second
per 100 MiB in use). kubox server does it by itself when half the file is
free (and at least 32 MiB), at start and every hour; run this on each box in
turn for more.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			res, err := a.Defrag(cmd.Context(), func(name string, before etcd.Usage) {
				if !quiet && !out.JSON() {
					fmt.Fprintf(cmd.ErrOrStderr(), "defragmenting etcd member %s: %s\n", name, before)
				}
			})
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), res, func(w io.Writer) error {
				freed := res.Before.Size - res.After.Size
				rate := float64(res.Before.InUse) / max(res.Duration.Seconds(), 1e-3)
				_, err := fmt.Fprintf(w, "defragmented in %s: %s -> %s (%s freed, %s/s); now %s\n", res.Duration.Round(time.Millisecond),
					ibytes(res.Before.Size), ibytes(res.After.Size), ibytes(freed), ibytes(int64(rate)), res.After)
				return err
			})
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	return cmd
}

func newEtcdAlarmCommand(admin func(*cobra.Command) (*server.Admin, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alarm",
		Short: "List or disarm etcd's alarms (NOSPACE: the database reached its quota)",
		Long: `List or disarm etcd's alarms.

NOSPACE: a write would have passed the database quota (etcd-quota-bytes);
etcd refuses every write but deletes until the alarm is disarmed. kubox
server handles it by itself within seconds: it compacts to the current
revision, defragments its member, and disarms once the database is below
80% of the quota. If the live objects need more, it logs "ETCD IS OUT OF
SPACE" and keeps the alarm: delete objects (kubectl delete works) and kubox
disarms within a minute, or raise etcd-quota-bytes and restart kubox.
"disarm" disarms every alarm now; it says when a member's database is still
too full, where the next writes raise NOSPACE again.`,
	}
	var out *output
	list := &cobra.Command{
		Use:   "list",
		Short: "List raised etcd alarms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			st, err := a.EtcdStatus(cmd.Context())
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), st.Alarms, func(w io.Writer) error {
				if len(st.Alarms) == 0 {
					_, err := fmt.Fprintln(w, "no alarm")
					return err
				}
				printAlarms(w, st.Alarms)
				return nil
			})
		},
	}
	out = addOutputFlag(list, "output format: json")
	disarm := &cobra.Command{
		Use:   "disarm",
		Short: "Disarm every raised etcd alarm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			done, full, err := a.DisarmAlarms(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(done) == 0 {
				fmt.Fprintln(w, "no alarm to disarm")
			} else {
				var names []string
				for _, al := range done {
					names = append(names, al.Alarm+" on "+al.Member)
				}
				fmt.Fprintf(w, "disarmed %s\n", strings.Join(names, ", "))
			}
			for _, m := range full {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s's database is %s: the next writes raise NOSPACE again; delete objects, wait for compaction and run kubox etcd defrag there, or raise etcd-quota-bytes\n", m.Name, m.Usage)
			}
			return nil
		},
	}
	cmd.AddCommand(list, disarm)
	return cmd
}

func printAlarms(w io.Writer, alarms []server.EtcdAlarm) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tALARM")
	for _, al := range alarms {
		fmt.Fprintf(tw, "%s\t%s\n", al.Member, al.Alarm)
	}
	tw.Flush()
}
