package server

import (
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/proxy/mode"
)

// ProxySettings are the service proxy's keys of `kubox server` (see proxy.Config).
type ProxySettings struct {
	Disable           bool   // run no service proxy (another one serves Services)
	Mode              string // auto (default), ipvs, nftables, iptables
	IPVSScheduler     string // rr (default), lc, dh, sh, sed, nq, wrr
	IPVSStrictARP     bool
	SyncPeriod        time.Duration // default 30s
	MinSyncPeriod     time.Duration // default 1s
	MasqueradeAll     bool
	NodePortAddresses []string // CIDRs; default the node IP
	CleanupOnStop     bool
}

// complete fills in defaults and checks the settings, one line per error.
func (p *ProxySettings) complete() error {
	m, err := mode.Parse(p.Mode)
	if err != nil {
		return err
	}
	p.Mode = string(m)
	if err := mode.CheckScheduler(p.IPVSScheduler); err != nil {
		return err
	}
	if p.IPVSScheduler == "" {
		p.IPVSScheduler = mode.DefaultScheduler
	}
	if p.SyncPeriod == 0 {
		p.SyncPeriod = proxy.DefaultSyncPeriod
	}
	if p.SyncPeriod < 0 {
		return fmt.Errorf("--proxy-sync-period %s: must be positive, e.g. 30s", p.SyncPeriod)
	}
	if p.MinSyncPeriod < 0 || p.MinSyncPeriod > p.SyncPeriod {
		return fmt.Errorf("--proxy-min-sync-period %s: must be between 0 and --proxy-sync-period (%s)", p.MinSyncPeriod, p.SyncPeriod)
	}
	if _, err := proxy.ParseNodePortAddresses(p.NodePortAddresses); err != nil {
		return err
	}
	return nil
}

// proxyComponent is the service proxy for this node, or nil when disabled.
func (s *Server) proxyComponent(client kubernetes.Interface) *proxy.Proxy {
	c := s.cfg
	if c.Proxy.Disable {
		s.log.Info("service proxy disabled (--disable-proxy)")
		return nil
	}
	return proxy.New(proxy.Config{
		Mode: mode.Mode(c.Proxy.Mode), Scheduler: c.Proxy.IPVSScheduler,
		NodeName: c.NodeName, NodeIP: c.NodeIP, ClusterCIDR: c.ClusterCIDR, Client: client,
		SyncPeriod: c.Proxy.SyncPeriod, MinSyncPeriod: c.Proxy.MinSyncPeriod,
		MasqueradeAll: c.Proxy.MasqueradeAll, NodePortAddresses: c.Proxy.NodePortAddresses,
		StrictARP: c.Proxy.IPVSStrictARP, CleanupOnStop: c.Proxy.CleanupOnStop,
		StateFile: filepath.Join(c.DataDir, "agent", "proxy-mode"),
		Log:       s.log.With("component", "proxy"),
	})
}
