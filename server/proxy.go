package server

import (
	"fmt"
	"time"

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

// validate checks the settings, one line per error.
func (p *ProxySettings) validate() error {
	if _, err := mode.Parse(p.Mode); err != nil {
		return err
	}
	if err := mode.CheckScheduler(p.IPVSScheduler); err != nil {
		return err
	}
	if p.SyncPeriod <= 0 {
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
