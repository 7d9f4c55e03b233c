package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/internal/fsutil"
)

func newCertsRotateCACommand(opts *serverOpts) *cobra.Command {
	var finish bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca [--finish]",
		Short: "Replace the cluster's CAs, keeping the old ones trusted until --finish",
		Long: `Replace the five CAs (cluster, client, request-header, etcd server, etcd
peer) in two steps, with a transition period between them.

rotate-ca: every CA gets a new key and certificate. Each <ca>.crt becomes a
bundle of the new CA (which signs from now on) and the old one (still
trusted); every leaf certificate is re-issued from the new CA and carries
the new CA cross-signed by the old one, so peers and kubeconfigs that trust
only the old CA still verify it. The admin kubeconfig is rewritten with both
CAs and a new client certificate; old client certificates keep working.

rotate-ca --finish: the old CAs are trusted no more; leaves are re-issued
without the cross-signed certificate.

Old files are moved aside (.old-<time>), never deleted. On a running server
the leaves are re-issued within seconds; restart kubox after each step
(systemctl restart kubox) so every in-process component and etcd load the
new trust, and the kubelet gets a serving certificate from the new CA. On a
stopped server the next start issues them. See the README for a three-box
cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			full, err := opts.load(cmd)
			if err != nil {
				return err
			}
			paths := full.paths()
			p := bootstrap.Layout(paths.PKI, paths.Kubeconfigs)
			if _, err := os.Stat(p.CAKey); err != nil {
				return fmt.Errorf("no CA in %s: %w (is --data-dir right?)", paths.PKI, err)
			}
			now := time.Now()
			var lines []string
			if finish {
				lines, err = p.FinishCARotation(cmd.Context(), now)
			} else {
				lines, err = p.RotateCA(cmd.Context(), now)
			}
			if err != nil {
				return err
			}
			// The kubelet's serving certificate comes from a CSR signed by
			// the cluster CA: move it aside so the kubelet asks the new CA
			// for one when it next starts.
			if _, err := os.Lstat(paths.KubeletServingCert); err == nil {
				if _, err := fsutil.MoveAside(paths.KubeletServingCert, now); err != nil {
					return err
				}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			w := cmd.OutOrStdout()
			for _, l := range lines {
				fmt.Fprintln(w, l)
			}
			if !serverRunning(paths.Lock) {
				fmt.Fprintln(w, "kubox server is not running: its next start issues every leaf certificate from the new CAs")
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for _, path := range p.LeafCertFiles() {
				if err := waitForFile(ctx, path); err != nil {
					return fmt.Errorf("%s was moved aside but not re-issued within %s: is kubox server healthy? (it re-issues on its next start)", path, timeout)
				}
			}
			fmt.Fprintln(w, "leaf certificates re-issued by the running kubox server; now restart it (systemctl restart kubox) so every component loads the new CAs")
			return nil
		},
	}
	cmd.Flags().BoolVar(&finish, "finish", false, "end the transition: trust only the new CAs")
	cmd.Flags().DurationVar(&timeout, "wait", time.Minute, "how long to wait for a running server to re-issue")
	return cmd
}
