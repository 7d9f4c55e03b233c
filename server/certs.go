package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/component"
)

// DefaultCertCheckInterval is how often a running server looks for leaf
// certificates to renew (also once at start).
const DefaultCertCheckInterval = time.Hour

// missingPoll is how often the renewer looks for leaves that `kubox certs
// rotate` moved aside; a stat per file, cheap.
const missingPoll = 2 * time.Second

// PKIConfig is the bootstrap configuration of this node's PKI.
func (c *Config) PKIConfig() bootstrap.Config {
	p := c.Paths()
	return bootstrap.Config{
		Dir:                 p.PKI,
		KubeconfigDir:       p.Kubeconfigs,
		NodeName:            c.NodeName,
		NodeIPs:             []net.IP{c.NodeIP},
		ServiceCIDR:         c.ServiceCIDR,
		ClusterDomain:       c.ClusterDomain,
		APIServerURL:        "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.HTTPSPort)),
		AdminKubeconfigPath: c.WriteKubeconfig,
		LeafLifetime:        c.Testing.LeafCertLifetime,
	}
}

var certExpiry = metrics.NewGaugeVec(&metrics.GaugeOpts{
	Namespace: "kubox", Name: "certificate_expiry_seconds",
	Help:           "Unix time at which each certificate in kubox's PKI expires, by certificate name (e.g. apiserver, etcd/server).",
	StabilityLevel: metrics.ALPHA,
}, []string{"cert"})

var registerCertMetrics sync.Once

// certRenewer re-issues leaf certificates while kubox runs: at start, every
// interval, and as soon as a leaf's files are missing (`kubox certs
// rotate`). What picks the new files up:
//   - apiserver serving cert and front-proxy client cert: the apiserver
//     watches those files and reloads them;
//   - the kubelet's serving cert is not kubox's: the kubelet requests and
//     renews it through a CSR (see services/csrapprover);
//   - etcd server/peer certs and the apiserver's etcd client cert: etcd's TLS
//     config reads the files on every new handshake;
//   - the admin kubeconfig (and its copy) is rewritten; kubectl reads it per run;
//   - kubeconfigs of the controller-manager, scheduler (in-process) and kubelet (child)
//     are rewritten, but those clients hold their cert in memory until kubox
//     restarts (renewal leaves them a third of the lifetime, four months with
//     the default one year, to do so).
type certRenewer struct {
	cfg      bootstrap.Config
	interval time.Duration
	log      *slog.Logger
	loop     component.Goroutine
}

// The renewal loop ends only when stopped: a failed renewal is retried, so
// the renewer is not a component.Failer.
var _ component.Component = (*certRenewer)(nil)

func newCertRenewer(c Config, log *slog.Logger) *certRenewer {
	return &certRenewer{cfg: c.PKIConfig(), interval: c.CertCheckInterval, log: log}
}

func (r *certRenewer) Name() string                   { return "certs" }
func (r *certRenewer) Stop(ctx context.Context) error { return r.loop.Stop(ctx) }

func (r *certRenewer) Start(ctx context.Context) error {
	registerCertMetrics.Do(func() { legacyregistry.MustRegister(certExpiry) })
	r.loop.Go(ctx, "certificate renewal", r.run)
	return nil
}

func (r *certRenewer) run(ctx context.Context) error {
	r.renew(ctx)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	poll := time.NewTicker(missingPoll)
	defer poll.Stop()
	layout := bootstrap.Layout(r.cfg.Dir, r.cfg.KubeconfigDir)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			r.renew(ctx)
		case <-poll.C:
			if anyMissing(layout.LeafCertFiles()) {
				r.renew(ctx)
			}
		}
	}
}

// renew re-issues what is due or missing and refreshes the expiry metric.
// A failure is logged and tried again at the next tick: kubox keeps
// serving with the certificates it has.
func (r *certRenewer) renew(ctx context.Context) {
	p, renewed, err := bootstrap.Renew(ctx, r.cfg)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("CERTIFICATE RENEWAL FAILED; will retry", "err", err, "retry_in", r.interval)
		}
		return
	}
	if err := p.WriteServingChain(); err != nil {
		r.log.Error("refresh the apiserver serving chain", "err", err)
	}
	certs, err := p.Certs()
	if err != nil {
		r.log.Error("read certificates", "err", err)
		return
	}
	next, nextName := time.Time{}, ""
	for _, c := range certs {
		certExpiry.WithLabelValues(c.Name).Set(float64(c.NotAfter.Unix()))
		if !c.IsCA && (next.IsZero() || c.NotAfter.Before(next)) {
			next, nextName = c.NotAfter, c.Name
		}
	}
	if len(renewed) > 0 {
		r.log.Info("renewed certificates", "certs", strings.Join(renewed, ","), "next_expiry", next.UTC().Format(time.RFC3339), "next_cert", nextName)
	}
}

func anyMissing(paths []string) bool {
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}
