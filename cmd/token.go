package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"

	"github.com/kubox/kubox/server"
)

// clusterAdminFlags are the flags of the membership verbs (token, etcd,
// node): which box's data dir and etcd port, from the flags or the config file.
func clusterAdminFlags(cmd *cobra.Command) func(*cobra.Command) (*server.Admin, error) {
	admin, _ := clusterAdminOpts(cmd)
	return admin
}

// clusterAdminOpts is clusterAdminFlags, and the options behind it for
// subcommands that need more of the server's configuration.
func clusterAdminOpts(cmd *cobra.Command) (func(*cobra.Command) (*server.Admin, error), *serverOpts) {
	cmd.PersistentPreRun = func(*cobra.Command, []string) { quietGRPC() }
	opts := addServerOpts(cmd.PersistentFlags(),
		sharedFlag{name: "data-dir", usage: "kubox data dir of this box"},
		sharedFlag{name: "etcd-client-port", usage: "this box's etcd client port"},
		sharedFlag{name: "node-name", usage: "this box's node name (default: the hostname, lower-cased)"},
	)
	return func(cmd *cobra.Command) (*server.Admin, error) {
		f, err := opts.load(cmd)
		if err != nil {
			return nil, err
		}
		name := f.cfg.NodeName
		if name == "" {
			name, _ = os.Hostname()
		}
		return &server.Admin{DataDir: filepath.Clean(f.cfg.DataDir), EtcdClientPort: f.cfg.EtcdClientPort, NodeName: strings.ToLower(name)}, nil
	}, opts
}

// quietGRPC silences gRPC's own logging, which would print connection
// chatter around a verb's etcd calls.
func quietGRPC() {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete tokens that let another box join this cluster",
		Long: `Create, list and delete join tokens.

A token looks like K10<CA hash>::<id>.<secret>. The joining box checks that the
server it contacts holds the CA with that hash before it sends the secret.
Tokens are Kubernetes bootstrap tokens (kube-system/bootstrap-token-<id>) and
expire (default after 1h). A token is used once: it is deleted when the box
that joined with it is up, unless it was created with --reusable (for
scripted fleets; delete it when done). The cluster's CA keys travel to the
joining box sealed with a key derived from the token's secret. Treat a token
like a password: it lets a box receive the cluster's CA keys.`,
	}
	admin := clusterAdminFlags(cmd)
	var ttl time.Duration
	var description string
	var out *output
	var reusable bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			tok, expires, err := a.CreateToken(cmd.Context(), ttl, description, reusable)
			if err != nil {
				return err
			}
			return out.Print(cmd.OutOrStdout(), map[string]any{"token": tok.String(), "id": tok.ID, "expires": expires}, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, tok.String())
				return err
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	create.Flags().BoolVar(&reusable, "reusable", false, "let any number of boxes join with the token until it expires (default: deleted after one join)")
	create.Flags().StringVar(&description, "description", "", "what the token is for (shown by list)")
	out = addOutputFlag(create, "output format: json")
	var listOut *output
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (ids and expiry; never the secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			toks, err := a.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			return listOut.Print(cmd.OutOrStdout(), toks, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tEXPIRES\tDESCRIPTION")
				for _, t := range toks {
					exp := t.Expires.Format(time.RFC3339)
					if t.Expired {
						exp += " (expired)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, exp, t.Description)
				}
				return tw.Flush()
			})
		},
	}
	listOut = addOutputFlag(list, "output format: json")
	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete join tokens by id",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := admin(cmd)
			if err != nil {
				return err
			}
			for _, arg := range args {
				id, err := a.DeleteToken(cmd.Context(), arg)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted token %s\n", id)
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
