package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/hostcheck"
	"github.com/kubox/kubox/server"
)

// certJSON is one certificate in `kubox certs check -o json`.
type certJSON struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	CA       string    `json:"ca"`
	IsCA     bool      `json:"is_ca"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft float64   `json:"days_left"`
	Status   string    `json:"status"` // OK, EXPIRING (leaf within 30 days), EXPIRED
}

func certStatus(c bootstrap.CertInfo, now time.Time) string {
	switch left := c.NotAfter.Sub(now); {
	case left <= 0:
		return "EXPIRED"
	case left < bootstrap.RenewalWindow:
		return "EXPIRING"
	}
	return "OK"
}

func certsJSON(certs []bootstrap.CertInfo, now time.Time) []certJSON {
	out := make([]certJSON, 0, len(certs))
	for _, c := range certs {
		out = append(out, certJSON{
			Name: c.Name, Path: c.Path, CA: issuerCN(c.Issuer), IsCA: c.IsCA, Subject: c.Subject,
			NotAfter: c.NotAfter.UTC(), DaysLeft: float64(int(c.NotAfter.Sub(now).Hours()/24*100)) / 100,
			Status: certStatus(c, now),
		})
	}
	return out
}

// issuerCN shortens "CN=kubox-ca" to "kubox-ca".
func issuerCN(dn string) string {
	for _, part := range strings.Split(dn, ",") {
		if v, ok := strings.CutPrefix(part, "CN="); ok {
			return v
		}
	}
	return dn
}

// readCerts lists the PKI under dataDir, with a one-line error when there
// is none.
func readCerts(pkiDir string) ([]bootstrap.CertInfo, error) {
	if _, err := os.Stat(pkiDir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no PKI at %s: start kubox server first, or set --data-dir", pkiDir)
	}
	return (&bootstrap.PKI{Dir: pkiDir}).Certs()
}

// certExpiryCheck is the certificate line of `kubox check`.
func certExpiryCheck(pkiDir string) hostcheck.Result {
	r := hostcheck.Result{Name: "certificates", Status: hostcheck.OK}
	certs, err := readCerts(pkiDir)
	if err != nil {
		if _, serr := os.Stat(pkiDir); errors.Is(serr, fs.ErrNotExist) {
			r.Message = "no PKI yet (kubox server creates it)"
			return r
		}
		r.Status, r.Message, r.Fix = hostcheck.Warn, err.Error(), "kubox certs check"
		return r
	}
	now := time.Now()
	var expired, expiring []string
	var next bootstrap.CertInfo
	for _, c := range certs {
		switch certStatus(c, now) {
		case "EXPIRED":
			expired = append(expired, c.Name)
		case "EXPIRING":
			expiring = append(expiring, c.Name)
		}
		if !c.IsCA && (next.Name == "" || c.NotAfter.Before(next.NotAfter)) {
			next = c
		}
	}
	switch {
	case len(expired) > 0:
		r.Status, r.Message = hostcheck.Fail, "expired: "+strings.Join(expired, ", ")
		r.Fix = "start kubox server (it renews leaves at start) or run kubox certs rotate"
	case len(expiring) > 0:
		r.Status, r.Message = hostcheck.Warn, "expire within 30 days: "+strings.Join(expiring, ", ")
		r.Fix = "kubox server renews leaves while it runs; run kubox certs rotate to renew now"
	default:
		r.Message = fmt.Sprintf("%d certificates; next leaf expiry %s (%s, %d days)", len(certs), next.Name,
			next.NotAfter.UTC().Format("2006-01-02"), int(next.NotAfter.Sub(now).Hours()/24))
	}
	return r
}

func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Check and renew the cluster's certificates",
		Long: `Check and renew the certificates in <data-dir>/pki.

A running kubox server renews every leaf certificate by itself once less
than a third of its lifetime is left (it looks at start and every
--cert-check-interval, default 1h). CAs (10 years) are rotated only on
request, with rotate-ca.
The data dir comes from --data-dir, else from ` + server.DefaultConfigFile + `.`,
	}
	opts := addServerOpts(cmd.PersistentFlags(), sharedFlag{name: "data-dir", usage: "kubox data dir"})
	cmd.AddCommand(newCertsCheckCommand(opts), newCertsRotateCommand(opts), newCertsRotateCACommand(opts))
	return cmd
}

func newCertsCheckCommand(opts *serverOpts) *cobra.Command {
	var out *output
	cmd := &cobra.Command{
		Use:   "check",
		Short: "List every certificate with its CA, expiry and days left; exit 1 if a leaf expires within 30 days",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := opts.load(cmd)
			if err != nil {
				return err
			}
			certs, err := readCerts(f.paths().PKI)
			if err != nil {
				return err
			}
			rows := certsJSON(certs, time.Now())
			if err := out.Print(cmd.OutOrStdout(), rows, func(w io.Writer) error { return printCerts(w, rows) }); err != nil {
				return err
			}
			var bad []string
			for _, r := range rows {
				if !r.IsCA && r.Status != "OK" {
					bad = append(bad, r.Name)
				}
			}
			if len(bad) > 0 {
				return fmt.Errorf("%d leaf certificate(s) expire within 30 days or have expired (%s): a running kubox server renews them; run kubox certs rotate to renew now", len(bad), strings.Join(bad, ", "))
			}
			return nil
		},
	}
	out = addOutputFlag(cmd, "output format: json, or nothing for a table")
	return cmd
}

func printCerts(w io.Writer, rows []certJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCA\tEXPIRES\tDAYS LEFT\tSTATUS")
	for _, r := range rows {
		name := r.Name
		if r.IsCA {
			name += " (CA)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%s\n", name, r.CA, r.NotAfter.Format(time.RFC3339), r.DaysLeft, r.Status)
	}
	return tw.Flush()
}

// reissuePoll is how often the rotate verbs look for the certificates a
// running server is to re-issue.
const reissuePoll = 200 * time.Millisecond

// waitForFile waits until path exists or ctx ends.
func waitForFile(ctx context.Context, path string) error {
	return wait.PollUntilContextCancel(ctx, reissuePoll, true, func(context.Context) (bool, error) {
		_, err := os.Stat(path)
		return err == nil, nil
	})
}

func newCertsRotateCommand(opts *serverOpts) *cobra.Command {
	var services []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate [--service NAME]...",
		Short: "Renew leaf certificates now (all of them, or the named ones) with new keys",
		Long: `Renew leaf certificates now, with new keys. The old cert and key are moved
aside (<name>.crt.old-<time>), never deleted.

On a running kubox server, the server re-issues them within seconds and the
components that reload from files pick them up (see README); otherwise they
are re-issued here, as the next start would. Names are those of
'kubox certs check' (apiserver, etcd/server, admin, ...).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			full, err := opts.load(cmd)
			if err != nil {
				return err
			}
			paths := full.paths()
			certs, err := readCerts(paths.PKI)
			if err != nil {
				return err
			}
			if len(services) == 0 {
				for _, c := range certs {
					if !c.IsCA {
						services = append(services, c.Name)
					}
				}
			}
			files := map[string]string{}
			for _, c := range certs {
				files[c.Name] = c.Path
			}
			p := &bootstrap.PKI{Dir: paths.PKI}
			now := time.Now()
			for _, name := range services {
				if _, ok := files[name]; !ok {
					return fmt.Errorf("--service %q: no such certificate (see kubox certs check for names)", name)
				}
			}
			for _, name := range services {
				if _, err := p.Retire(name, now); err != nil {
					if errors.Is(err, bootstrap.ErrNotLeaf) {
						return fmt.Errorf("--service %q: %v", name, err)
					}
					return err
				}
			}
			running := serverRunning(paths.Lock)
			if !running {
				cfg, err := full.config()
				if err != nil {
					return err
				}
				if _, err := bootstrap.Ensure(cmd.Context(), cfg.PKIConfig()); err != nil {
					return fmt.Errorf("re-issue certificates: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for _, name := range services {
				if err := waitForFile(ctx, files[name]); err != nil {
					return fmt.Errorf("%s was moved aside but not re-issued within %s: is kubox server healthy? (it re-issues on its next start)", name, timeout)
				}
			}
			after, err := readCerts(paths.PKI)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, c := range after {
				for _, name := range services {
					if c.Name == name {
						fmt.Fprintf(w, "%s: renewed, expires %s\n", name, c.NotAfter.UTC().Format(time.RFC3339))
					}
				}
			}
			if running {
				fmt.Fprintln(w, "renewed by the running kubox server")
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&services, "service", nil, "certificate to renew (repeatable; default: every leaf)")
	cmd.Flags().DurationVar(&timeout, "wait", time.Minute, "how long to wait for a running server to re-issue")
	return cmd
}
