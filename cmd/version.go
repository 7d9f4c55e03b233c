package main

import (
	"fmt"
	"io"
	"sort"

	ctrdversion "github.com/containerd/containerd/v2/version"
	"github.com/spf13/cobra"
	etcdversion "go.etcd.io/etcd/api/v3/version"
	k8sversion "k8s.io/component-base/version"

	"github.com/kubox/kubox/embedded/assets"
)

func versions() map[string]string {
	v := map[string]string{
		"kubox":      version,
		"kubernetes": k8sversion.Get().GitVersion,
		"etcd":       etcdversion.Version,
		"containerd": ctrdversion.Version,
	}
	for name, ver := range assets.Versions() {
		v[name] = ver
	}
	return v
}

func newVersionCommand() *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of kubox and of every component it embeds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versions()
			return out.Print(cmd.OutOrStdout(), v, func(w io.Writer) error {
				names := make([]string, 0, len(v))
				for n := range v {
					if n != "kubox" {
						names = append(names, n)
					}
				}
				sort.Strings(names)
				fmt.Fprintf(w, "kubox %s\n", v["kubox"])
				for _, n := range names {
					fmt.Fprintf(w, "  %-12s %s\n", n, v[n])
				}
				return nil
			})
		},
	}
	out = addOutputFlag(cmd, "output format: json")
	return cmd
}
