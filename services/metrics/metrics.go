// Package metrics serves kubox's own Prometheus metrics (certificate
// expiry, scheduled snapshots, and kubox's Go runtime and process figures)
// on a TLS listener of their own that only clients with a certificate from
// the cluster's client CA may use. The same kubox_* metrics stay on the
// apiserver's /metrics; this endpoint needs no Kubernetes RBAC and no
// working apiserver, and does not carry the apiserver's thousands of series.
package metrics

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/kubox/kubox/component"
)

// DefaultAddress is where the endpoint listens unless told otherwise.
const DefaultAddress = "127.0.0.1:10259"

// Prefixes are the metric name prefixes the endpoint serves.
var Prefixes = []string{"kubox_", "go_", "process_"}

// Config is the endpoint's configuration.
type Config struct {
	Address string // host:port to listen on
	// CertFile and KeyFile are the serving certificate; ClientCAFile holds
	// the CA(s) client certificates must chain to. All three are re-read
	// when they change (renewal, CA rotation).
	CertFile, KeyFile, ClientCAFile string
	// Gatherer yields the metrics; only names with one of Prefixes are served.
	Gatherer prometheus.Gatherer
	// Pprof also serves Go's profiles under /debug/pprof/ (benchmarks
	// only: a profile can stall the process it profiles).
	Pprof bool
	Log   *slog.Logger
}

// Server is the component.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
	run component.Goroutine
}

var (
	_ component.Component = (*Server)(nil)
	_ component.Failer    = (*Server)(nil)
)

// New returns the endpoint for cfg.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Server{cfg: cfg}
}

func (s *Server) Name() string { return "metrics" }

// Start listens (failing at once if the address is taken) and serves.
func (s *Server) Start(ctx context.Context) error {
	files := &tlsFiles{cert: s.cfg.CertFile, key: s.cfg.KeyFile, ca: s.cfg.ClientCAFile}
	if _, err := files.config(); err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("metrics endpoint on %s: %w (set --metrics-address)", s.cfg.Address, err)
	}
	s.ln = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(filtered{s.cfg.Gatherer}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Every connection gets the current files: a renewed serving cert
		// or a rotated client CA applies without a restart.
		TLSConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return files.config() },
		},
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	s.cfg.Log.Info("serving kubox metrics", "address", "https://"+ln.Addr().String()+"/metrics", "client_ca", s.cfg.ClientCAFile)
	s.run.Go(ctx, "metrics endpoint", func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- s.srv.ServeTLS(ln, "", "") }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = s.srv.Shutdown(sctx)
			return nil
		}
	})
	return nil
}

// Failed reports an endpoint that stopped serving on its own.
func (s *Server) Failed() <-chan error { return s.run.Failed() }

func (s *Server) Stop(ctx context.Context) error { return s.run.Stop(ctx) }

// Addr is the address the endpoint listens on, once started.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// filtered serves only kubox's own families.
type filtered struct{ g prometheus.Gatherer }

func (f filtered) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := f.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		for _, p := range Prefixes {
			if strings.HasPrefix(mf.GetName(), p) {
				out = append(out, mf)
				break
			}
		}
	}
	return out, err
}

// tlsFiles builds the server's TLS config from its files, again only when
// one of them changed.
type tlsFiles struct {
	cert, key, ca string
	mu            sync.Mutex
	stamp         string
	cfg           *tls.Config
}

func (t *tlsFiles) config() (*tls.Config, error) {
	var stamp bytes.Buffer
	for _, p := range []string{t.cert, t.key, t.ca} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&stamp, "%s %d %d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cfg != nil && stamp.String() == t.stamp {
		return t.cfg, nil
	}
	pair, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(t.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("client CA file " + t.ca + " holds no certificate")
	}
	t.cfg = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	t.stamp = stamp.String()
	return t.cfg, nil
}
