package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kubox",
		Short:         "A Kubernetes appliance for edge sites, in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServerCommand(), newVersionCommand())
	root.AddCommand(newManifestsCommand())
	root.AddCommand(newSnapshotCommand(), newRestoreCommand())
	root.AddCommand(newCheckCommand(), newCertsCommand())
	root.AddCommand(newTokenCommand(), newEtcdCommand(), newNodeCommand())
	root.AddCommand(newAirgapCommand(), newKubeletCommand())
	hideLibraryFlags()
	// Listed for help; the real work happens in multicall before cobra runs.
	for _, t := range []struct{ name, short string }{
		{"kubectl", "Run the embedded upstream kubectl (uses the admin kubeconfig by default)"},
		{"ctr", "Run the embedded containerd ctr against kubox's containerd"},
	} {
		root.AddCommand(&cobra.Command{Use: t.name, Short: t.short, DisableFlagParsing: true, Run: func(*cobra.Command, []string) {}})
	}
	return root
}

// hideLibraryFlags keeps flags that linked libraries register on
// pflag.CommandLine in init functions (component-base's --version) out of
// every verb's help: cobra merges that set into the root's flags. kubox
// registers none there; `kubox version` is the verb. They are hidden, not
// removed, because upstream code looks them up in that set.
func hideLibraryFlags() {
	pflag.CommandLine.VisitAll(func(f *pflag.Flag) { f.Hidden = true })
}
