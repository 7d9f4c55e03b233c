package main

import (
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/server"
)

// proxyServerFlags are `kubox server`'s service proxy keys.
type proxyServerFlags struct {
	disable                   bool
	mode, scheduler, npa      string
	strictARP, masqAll, clean bool
	sync, minSync             time.Duration
}

func (f *proxyServerFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.disable, "disable-proxy", false, "run no service proxy (when another one, e.g. a CNI's, serves Services)")
	fs.StringVar(&f.mode, "proxy-mode", "auto", "service proxy mode: auto (ipvs where the kernel has ip_vs, else nftables), ipvs, nftables or iptables")
	fs.StringVar(&f.scheduler, "ipvs-scheduler", "rr", "IPVS scheduler: rr, lc, dh, sh, sed, nq or wrr")
	fs.BoolVar(&f.strictARP, "ipvs-strict-arp", false, "IPVS mode: answer ARP only for addresses of the asked interface (needed by L2 load balancers such as MetalLB)")
	fs.DurationVar(&f.sync, "proxy-sync-period", proxy.DefaultSyncPeriod, "longest time the service rules may wait for a resync after a failed sync")
	fs.DurationVar(&f.minSync, "proxy-min-sync-period", proxy.DefaultMinSyncPeriod, "shortest time between two syncs of the service rules (batches bursts of changes)")
	fs.BoolVar(&f.masqAll, "proxy-masquerade-all", false, "SNAT all Service traffic, not only traffic from outside the pod network")
	fs.StringVar(&f.npa, "nodeport-addresses", "", "comma-separated IPv4 CIDRs whose addresses serve NodePorts (default: the node IP only)")
	fs.BoolVar(&f.clean, "proxy-cleanup-on-stop", true, "remove the service rules when kubox stops (false keeps Services of still-running pods reachable)")
}

func (f *proxyServerFlags) apply(c *server.Config) {
	c.Proxy = server.ProxySettings{
		Disable: f.disable, Mode: f.mode, IPVSScheduler: f.scheduler, IPVSStrictARP: f.strictARP,
		SyncPeriod: f.sync, MinSyncPeriod: f.minSync, MasqueradeAll: f.masqAll, CleanupOnStop: f.clean,
	}
	for _, s := range strings.Split(f.npa, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Proxy.NodePortAddresses = append(c.Proxy.NodePortAddresses, s)
		}
	}
}
