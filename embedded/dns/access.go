package dns

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// accessDirective is kubox's own plugin: it answers only the clients the
// cluster DNS is for, and REFUSED to everyone else, so a box with a
// reachable (even public) address is neither an open resolver nor a way to
// list the cluster's Services.
//
// Who may ask: the sources on its line (the pod network, loopback, this
// node, and the operator's dns-allow-cidrs), checked against the Corefile's
// static list, plus the addresses of the cluster's Nodes (the other boxes:
// pod traffic from another box reaches this listener masqueraded to that
// box's address), which change as boxes join and leave. Those are kept in
// memory from a watch of the Nodes and read on every query, instead of
// written into the Corefile for the acl plugin: a reload restarts the server
// (the kubernetes plugin syncs again) and comes only every reload interval,
// so a joining box's pods would be refused for up to half a minute.
const accessDirective = "kubox_access"

// boxes are the addresses of the cluster's Nodes, replaced whole.
type boxes struct{ ips atomic.Pointer[[]net.IP] }

func (b *boxes) set(ips []net.IP) { b.ips.Store(&ips) }

func (b *boxes) has(ip net.IP) bool {
	p := b.ips.Load()
	return p != nil && slices.ContainsFunc(*p, ip.Equal)
}

// nodeIPs are the addresses of nodes the cluster DNS serves.
func nodeIPs(nodes []*corev1.Node) []net.IP {
	var ips []net.IP
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		}
	}
	return ips
}

// access is the plugin's handler.
type access struct {
	next  plugin.Handler
	nets  []*net.IPNet
	boxes *boxes
}

func (a *access) Name() string { return accessDirective }

func (a *access) allowed(ip net.IP) bool {
	if ip == nil {
		return false
	}
	for _, n := range a.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return a.boxes.has(ip)
}

func (a *access) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w}
	if a.allowed(net.ParseIP(state.IP())) {
		return plugin.NextOrFailure(a.Name(), a.next, ctx, w, r)
	}
	// REFUSED, as the acl plugin's block: no bigger than the query, so no
	// use for amplification, and it tells a misconfigured client why.
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeRefused)
	_ = w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// setupAccess reads `kubox_access NET...` (CIDRs or addresses). The Node
// addresses come from the DNS that runs (see loaderDNS); when only checking
// a Corefile (Init) there is none, and an empty set does.
func setupAccess(c *caddy.Controller) error {
	a := &access{boxes: &boxes{}}
	for c.Next() {
		for _, arg := range c.RemainingArgs() {
			n, err := parseNet(arg)
			if err != nil {
				return plugin.Error(accessDirective, err)
			}
			a.nets = append(a.nets, n)
		}
		if c.NextBlock() {
			return plugin.Error(accessDirective, c.ArgErr())
		}
	}
	loaderMu.Lock()
	if loaderDNS != nil {
		a.boxes = loaderDNS.boxes
	}
	loaderMu.Unlock()
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		a.next = next
		return a
	})
	return nil
}

// parseNet reads a CIDR, or one address as a /32 (/128).
func parseNet(s string) (*net.IPNet, error) {
	if _, n, err := net.ParseCIDR(s); err == nil {
		return n, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("%q is neither a CIDR nor an address", s)
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

// watchNodes keeps d.boxes the addresses of the cluster's Nodes, from a
// watch, so a joining box's queries are answered as soon as its Node
// exists. It returns a function that stops the watch.
func (d *DNS) watchNodes(ctx context.Context) (stop func()) {
	factory := informers.NewSharedInformerFactory(d.cfg.Client, 0)
	nodes := factory.Core().V1().Nodes()
	refresh := func(any) {
		list, err := nodes.Lister().List(labels.Everything())
		if err != nil {
			d.cfg.Log.Warn("list Nodes for the DNS access check", "err", err)
			return
		}
		d.boxes.set(nodeIPs(list))
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    refresh,
		UpdateFunc: func(_, obj any) { refresh(obj) },
		DeleteFunc: refresh,
	}); err != nil {
		// Only other boxes are refused meanwhile: pods and this box are
		// in the Corefile's static list.
		d.cfg.Log.Error("cannot watch Nodes: other boxes' queries are refused", "err", err)
	}
	factory.Start(ctx.Done())
	return factory.Shutdown
}
