// Package controllers runs the upstream kube-controller-manager inside kubox,
// with node CIDR allocation on so every node gets its pod subnet.
//
// Every box runs one, and the Lease kube-system/kube-controller-manager
// decides which one works (single box included: one code path). Upstream's
// own election exits the process on a lost lease; kubox runs the election
// itself (internal/leader) and calls upstream's Run with leader-elect off
// for each term, on a config built afresh, since Run shuts down the event
// broadcaster it is given and registers configz under a fixed name.
package controllers

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/rest"
	"k8s.io/component-base/configz"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/config"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/flags"
	"github.com/kubox/kubox/internal/leader"
)

// Config holds what kubox decides for the controller manager.
type Config struct {
	Kubeconfig                            string
	ClusterCIDR                           string
	ServiceCIDR                           string
	NodeCIDRMaskV4                        int    // default 24
	ClusterSigningCert, ClusterSigningKey string // CSR signing (kubelet serving certs)
	RootCA                                string // put into service-account token secrets / kube-root-ca.crt
	SAKey                                 string // signs legacy service-account tokens
	NodeName                              string // start of the lease identity (default: host name)
	LeaseIdentity                         string // the whole identity, when the caller keeps one (see leader.StableIdentity)
	Extra                                 map[string]string
	Log                                   *slog.Logger
}

// Controllers is the embedded kube-controller-manager.
type Controllers struct {
	cfg      Config
	opts     *options.KubeControllerManagerOptions
	election leader.Config
	run      component.Goroutine
}

var (
	_ component.Component = (*Controllers)(nil)
	_ component.Failer    = (*Controllers)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Controllers {
	if cfg.NodeCIDRMaskV4 == 0 {
		cfg.NodeCIDRMaskV4 = 24
	}
	return &Controllers{cfg: cfg}
}

func (c *Controllers) Name() string { return "controller-manager" }

// Args are the upstream flags kubox sets.
func (c *Controllers) Args() []string {
	m := map[string]string{
		"kubeconfig":                       c.cfg.Kubeconfig,
		"authentication-kubeconfig":        c.cfg.Kubeconfig,
		"authorization-kubeconfig":         c.cfg.Kubeconfig,
		"allocate-node-cidrs":              "true",
		"cluster-cidr":                     c.cfg.ClusterCIDR,
		"service-cluster-ip-range":         c.cfg.ServiceCIDR,
		"node-cidr-mask-size-ipv4":         fmt.Sprint(c.cfg.NodeCIDRMaskV4),
		"cluster-signing-cert-file":        c.cfg.ClusterSigningCert,
		"cluster-signing-key-file":         c.cfg.ClusterSigningKey,
		"root-ca-file":                     c.cfg.RootCA,
		"service-account-private-key-file": c.cfg.SAKey,
		"use-service-account-credentials":  "true",
		// At start-up every controller gets or creates its service account
		// (about 90 requests); at the default 20 QPS that alone delayed the
		// first node's pod CIDR by seconds (measured). The apiserver is in
		// this process, so there is no remote server to protect.
		"kube-api-qps":   "200",
		"kube-api-burst": "400",
		"controllers":    "*,tokencleaner",
		"profiling":      "false",
		// No HTTPS listener: kubox reports health itself, and an unused
		// listener is one more thing to secure.
		"secure-port": "0",
	}
	for k, v := range c.cfg.Extra {
		m[k] = v
	}
	// kubox campaigns itself (see the package comment); the other
	// leader-elect-* flags still set the timings and the Lease.
	m["leader-elect"] = "false"
	return flags.Args(m)
}

func (c *Controllers) Init(ctx context.Context) error {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return fmt.Errorf("controller-manager options: %w", err)
	}
	fss := s.Flags(app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	s.ParsedFlags = &fss
	if err := flags.Parse("kube-controller-manager", fss, c.Args()); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("controller-manager feature gates: %w", err)
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	// Built here once to fail early on a bad configuration; each term
	// builds its own (see the package comment).
	cfg, err := c.config(ctx, s)
	if err != nil {
		return err
	}
	c.opts = s
	c.election, err = leader.Upstream(cfg.ComponentConfig.Generic.LeaderElection, cfg.Kubeconfig, "kube-controller-manager",
		leader.KeptOrNew(c.cfg.LeaseIdentity, c.cfg.NodeName), c.log())
	return err
}

func (c *Controllers) config(ctx context.Context, s *options.KubeControllerManagerOptions) (*config.CompletedConfig, error) {
	cfg, err := s.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	if err != nil {
		return nil, fmt.Errorf("controller-manager config: %w", err)
	}
	return cfg.Complete(), nil
}

// Start campaigns for the lease in the background; the controllers run
// while this box holds it.
func (c *Controllers) Start(ctx context.Context) error {
	c.run.Go(ctx, "controller-manager", func(ctx context.Context) error {
		return leader.Run(ctx, c.election, c.term)
	})
	return nil
}

// term runs the controllers until ctx ends (the lease is lost or kubox
// stops) and returns once they have stopped.
func (c *Controllers) term(ctx context.Context) error {
	cfg, err := c.config(ctx, c.opts)
	if err != nil {
		return err
	}
	// Run registers its configz entry and never removes it; the next
	// term's Run would fail on the duplicate.
	defer configz.Delete(app.ConfigzName)
	if err := app.Run(ctx, cfg); err != nil && ctx.Err() != nil {
		// After a stop or a lost lease: some controllers outlived
		// upstream's shutdown timeout and still wind down.
		c.log().Warn("controllers did not all stop in time", "err", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("controller-manager: %w", err)
	}
	return nil
}

// Ready returns at once: the controllers work through the apiserver, which
// is already ready, and on a box that does not hold the lease they never
// run at all.
func (c *Controllers) Ready(ctx context.Context) error { return nil }

// Failed reports a controller manager that stopped on its own while it
// held the lease.
func (c *Controllers) Failed() <-chan error { return c.run.Failed() }

func (c *Controllers) Stop(ctx context.Context) error {
	if err := c.run.Stop(ctx); err != nil {
		return fmt.Errorf("controller-manager did not stop in time: %w", err)
	}
	return nil
}

func (c *Controllers) log() *slog.Logger {
	l := c.cfg.Log
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "controller-manager")
}
