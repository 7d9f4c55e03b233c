// Package apiserver runs the upstream kube-apiserver inside kubox.
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/flags"
)

// Config holds what kubox decides for the apiserver; everything else keeps
// upstream defaults.
type Config struct {
	NodeIP        net.IP // advertise address: must not be loopback
	Port          int    // secure port on all addresses; default 6443
	ServiceCIDR   string
	ClusterDomain string // the service-account issuer is the kubernetes Service's name in it
	EtcdURL       string
	DataDir       string // for the apiserver's own scratch files
	ClusterCA     string // serving CA (kubeconfigs trust it)
	ClientCA      string
	RequestCA     string
	ProxyCert     string // front-proxy client
	ProxyKey      string
	ServingCert   string
	ServingKey    string
	EtcdCA        string
	EtcdCert      string
	EtcdKey       string
	KubeletCert   string // apiserver -> kubelet client
	KubeletKey    string
	SAKey         string // service-account signing key
	SAPub         string
	Encryption    string // EncryptionConfiguration file
	NodePortRange string
	// Extra flags as name -> value, applied last (advanced users).
	Extra map[string]string
	// AdminCert/AdminKey are used to probe /readyz.
	AdminCert, AdminKey string
	// Install, when set, adds API groups of kubox's own to the
	// kube-apiserver's server (behind the aggregator: the same
	// authentication, authorization and audit as the built-in groups)
	// before it serves. Called once, from Start's goroutine.
	Install func(kube *genericapiserver.GenericAPIServer) error
	Log     *slog.Logger
}

// APIServer is the embedded kube-apiserver.
type APIServer struct {
	cfg  Config
	opts options.CompletedOptions
	log  *slog.Logger
	run  component.Goroutine
}

var (
	_ component.Component   = (*APIServer)(nil)
	_ component.Initializer = (*APIServer)(nil)
	_ component.Readier     = (*APIServer)(nil)
	_ component.Failer      = (*APIServer)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *APIServer {
	if cfg.Port == 0 {
		cfg.Port = 6443
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.NodePortRange == "" {
		cfg.NodePortRange = "30000-32767"
	}
	return &APIServer{cfg: cfg, log: cfg.Log}
}

func (a *APIServer) Name() string { return "apiserver" }

// URL is the apiserver's local address.
func (a *APIServer) URL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(a.cfg.Port))
}

// Args are the upstream flags kubox sets.
func (a *APIServer) Args() []string {
	c := a.cfg
	issuer := "https://kubernetes.default.svc." + c.ClusterDomain
	audiences := issuer
	if issuer != legacyIssuer {
		audiences += "," + legacyIssuer
	}
	m := map[string]string{
		"advertise-address":                  c.NodeIP.String(),
		"secure-port":                        strconv.Itoa(c.Port),
		"allow-privileged":                   "true",
		"anonymous-auth":                     "false",
		"authorization-mode":                 "Node,RBAC",
		"enable-admission-plugins":           "NodeRestriction",
		"service-cluster-ip-range":           c.ServiceCIDR,
		"service-node-port-range":            c.NodePortRange,
		"etcd-servers":                       c.EtcdURL,
		"etcd-cafile":                        c.EtcdCA,
		"etcd-certfile":                      c.EtcdCert,
		"etcd-keyfile":                       c.EtcdKey,
		"client-ca-file":                     c.ClientCA,
		"tls-cert-file":                      c.ServingCert,
		"tls-private-key-file":               c.ServingKey,
		"kubelet-client-certificate":         c.KubeletCert,
		"kubelet-client-key":                 c.KubeletKey,
		"kubelet-certificate-authority":      c.ClusterCA,
		"kubelet-preferred-address-types":    "InternalIP,Hostname,ExternalIP",
		"requestheader-client-ca-file":       c.RequestCA,
		"requestheader-allowed-names":        "front-proxy-client",
		"requestheader-username-headers":     "X-Remote-User",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"proxy-client-cert-file":             c.ProxyCert,
		"proxy-client-key-file":              c.ProxyKey,
		"service-account-key-file":           c.SAPub,
		"service-account-signing-key-file":   c.SAKey,
		"service-account-issuer":             issuer,
		"api-audiences":                      audiences,
		"encryption-provider-config":         c.Encryption,
		"profiling":                          "false",
		"enable-bootstrap-token-auth":        "true",
		"endpoint-reconciler-type":           "lease",
	}
	for k, v := range c.Extra {
		m[k] = v
	}
	args := flags.Args(m)
	if issuer != legacyIssuer {
		// The first issuer signs new tokens; later ones are only accepted.
		args = append(args, "--service-account-issuer="+legacyIssuer)
	}
	return args
}

// legacyIssuer is the service-account issuer kubox used whatever the
// cluster domain, before the domain reached the apiserver: tokens it issued
// (and their audience) stay valid on a cluster with another domain.
const legacyIssuer = "https://kubernetes.default.svc.cluster.local"

func (a *APIServer) Init(ctx context.Context) error {
	if a.cfg.NodeIP == nil || a.cfg.NodeIP.IsLoopback() {
		return fmt.Errorf("apiserver advertise address %v: need a non-loopback node IP (set --node-ip)", a.cfg.NodeIP)
	}
	s := options.NewServerRunOptions()
	if err := flags.Parse("kube-apiserver", s.Flags(), a.Args()); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("apiserver feature gates: %w", err)
	}
	// The apiserver's loopback clients should not log warnings about themselves.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("complete apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	a.opts = completed
	return nil
}

func (a *APIServer) Start(ctx context.Context) error {
	a.run.Go(ctx, "apiserver", a.serve)
	return nil
}

// serve is upstream's app.Run with two steps more: kubox's bootstrap hooks
// replace upstream's slow ones (bootstrap.go), and between building the
// server chain and preparing it, Install adds kubox's groups to the
// kube-apiserver's server (the aggregator's delegate), where they are
// served like built-in ones.
func (a *APIServer) serve(ctx context.Context) error {
	config, err := app.NewConfig(a.opts)
	if err != nil {
		return err
	}
	config.KubeAPIs.ControlPlane.Generic.DisabledPostStartHooks.Insert(upstreamBootstrapHooks...)
	completed, err := config.Complete()
	if err != nil {
		return err
	}
	chain, err := app.CreateServerChain(completed)
	if err != nil {
		return err
	}
	if err := addBootstrapHooks(chain.GenericAPIServer); err != nil {
		return fmt.Errorf("add kubox's bootstrap hooks: %w", err)
	}
	if a.cfg.Install != nil {
		kube, ok := chain.GenericAPIServer.NextDelegate().(*genericapiserver.GenericAPIServer)
		if !ok {
			return fmt.Errorf("install kubox's API groups: the aggregator's delegate is a %T, not the kube-apiserver's server", chain.GenericAPIServer.NextDelegate())
		}
		if err := a.cfg.Install(kube); err != nil {
			return fmt.Errorf("install kubox's API groups: %w", err)
		}
	}
	prepared, err := chain.PrepareRun()
	if err != nil {
		return err
	}
	return prepared.Run(ctx)
}

// Failed reports an apiserver that stopped serving on its own.
func (a *APIServer) Failed() <-chan error { return a.run.Failed() }

// Ready polls /readyz with the admin client certificate.
func (a *APIServer) Ready(ctx context.Context) error {
	client, err := a.probeClient()
	if err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL()+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return nil
}

func (a *APIServer) probeClient() (*http.Client, error) {
	ca, err := os.ReadFile(a.cfg.ClusterCA)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(a.cfg.AdminCert, a.cfg.AdminKey)
	if err != nil {
		return nil, fmt.Errorf("load admin client cert: %w", err)
	}
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

// stopGrace bounds how long Stop waits for the apiserver to drain. Upstream
// waits up to the request timeout (60 s) for clients that, inside kubox, are
// already stopped or about to end with the process; the apiserver holds no
// state of its own, so kubox moves on to close etcd cleanly.
const stopGrace = 3 * time.Second

func (a *APIServer) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	if err := a.run.Stop(ctx); err != nil {
		a.log.Info("apiserver still draining requests; it ends with the process", "waited", stopGrace)
	}
	return nil
}
