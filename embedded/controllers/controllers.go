// Package controllers runs the upstream kube-controller-manager inside kubox,
// with node CIDR allocation on so every node gets its pod subnet.
package controllers

import (
	"context"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/config"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/flags"
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
	LeaderElect                           bool
	Extra                                 map[string]string
}

// Controllers is the embedded kube-controller-manager.
type Controllers struct {
	cfg       Config
	completed *config.CompletedConfig
	component.Goroutine
}

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
		"leader-elect":   fmt.Sprint(c.cfg.LeaderElect),
		"profiling":      "false",
		// No HTTPS listener: kubox reports health itself, and an unused
		// listener is one more thing to secure.
		"secure-port": "0",
	}
	for k, v := range c.cfg.Extra {
		m[k] = v
	}
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
	cfg, err := s.Config(ctx, app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases())
	if err != nil {
		return fmt.Errorf("controller-manager config: %w", err)
	}
	c.completed = cfg.Complete()
	return nil
}

func (c *Controllers) Start(ctx context.Context) error {
	c.Go(ctx, "controller-manager", func(ctx context.Context) error { return app.Run(ctx, c.completed) })
	return nil
}

// Ready returns at once: the controllers work through the apiserver, which
// is already ready, and nothing waits on them directly.
func (c *Controllers) Ready(ctx context.Context) error { return nil }

func (c *Controllers) Stop(ctx context.Context) error {
	if err := c.Goroutine.Stop(ctx); err != nil {
		return fmt.Errorf("controller-manager did not stop in time: %w", err)
	}
	return nil
}
