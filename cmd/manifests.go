package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newManifestsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "Show the manifests the boxes apply from their manifests dir",
	}
	admin := clusterAdminFlags(cmd)
	var out *output
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List each manifest file: applied or not, its objects, which boxes hold it, its last error",
		Long: `List each file of the boxes' manifests dirs (manifests-dir, default
/etc/kubox/manifests), and of the applications installed from air-gap
bundles (named <app>/<file>), as the cluster records it: whether every box holding it
applied it, how many objects it applied, which box applied it last and when,
the boxes that hold it, and the last error. Read from the cluster, so it works
on any box while kubox server runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			files, err := a.Manifests(cmd.Context())
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), files, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "FILE\tSTATE\tOBJECTS\tAPPLIED-BY\tAPPLIED-AT\tBOXES\tERROR")
				for _, f := range files {
					state := "applied"
					switch {
					case len(f.Boxes) == 0:
						state = "removing"
					case !f.Applied:
						state = "error"
					}
					at := "-"
					if !f.AppliedAt.IsZero() {
						at = f.AppliedAt.Local().Format(time.RFC3339)
					}
					by := f.AppliedBy
					if by == "" {
						by = "-"
					}
					errText := f.Error
					if errText == "" {
						errText = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", f.File, state, len(f.Objects), by, at,
						strings.Join(slices.Sorted(maps.Keys(f.Boxes)), ","), errText)
				}
				return tw.Flush()
			})
		},
	}
	out = addOutputFlag(ls, "output format: json")
	cmd.AddCommand(ls)
	return cmd
}
