package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/embedded/component"
)

// RouteProtocol marks the routes kubox adds (a private rtnetlink protocol
// number), so it can tell them from anyone else's when it cleans up.
const RouteProtocol = netlink.RouteProtocol(0x4b)

// RoutesConfig says whose pod CIDRs to route.
type RoutesConfig struct {
	NodeName string // this node: its own pod CIDR is on its bridge
	Client   kubernetes.Interface
	Interval time.Duration // how often to reconcile; default 2s
	Log      *slog.Logger
}

// Routes sends each other node's pod CIDR to that node's InternalIP: a host
// route on the shared subnet, which is how 1-3 boxes on one LAN reach each
// other's pods without an overlay.
type Routes struct {
	cfg RoutesConfig
	component.Goroutine
	warned map[string]bool
}

// NewRoutes returns the component for cfg.
func NewRoutes(cfg RoutesConfig) *Routes {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Routes{cfg: cfg, warned: map[string]bool{}}
}

func (r *Routes) Name() string                    { return "pod-routes" }
func (r *Routes) Init(context.Context) error      { return nil }
func (r *Routes) Ready(context.Context) error     { return nil }
func (r *Routes) Stop(ctx context.Context) error  { return r.Goroutine.Stop(ctx) }
func (r *Routes) Start(ctx context.Context) error { r.Go(ctx, "pod routes", r.run); return nil }

func (r *Routes) run(ctx context.Context) error {
	for {
		if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("pod routes: will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.Interval):
		}
	}
}

// Wanted maps each other node's pod CIDR to its InternalIP.
func Wanted(self string, nodes []corev1.Node) map[string]net.IP {
	out := map[string]net.IP{}
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				if ip := net.ParseIP(a.Address).To4(); ip != nil {
					out[n.Spec.PodCIDR] = ip
					break
				}
			}
		}
	}
	return out
}

// Reconcile adds missing routes and deletes kubox's routes for nodes that
// are gone or moved.
func (r *Routes) Reconcile(ctx context.Context) error {
	nodes, err := r.cfg.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	want := Wanted(r.cfg.NodeName, nodes.Items)
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, rt := range have {
		if rt.Dst != nil {
			if gw, ok := want[rt.Dst.String()]; ok && gw.Equal(rt.Gw) {
				delete(want, rt.Dst.String())
				continue
			}
		}
		if err := netlink.RouteDel(&rt); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rt.Dst, err))
		} else {
			r.cfg.Log.Info("deleted pod route", "dst", rt.Dst, "via", rt.Gw)
		}
	}
	for _, cidr := range sortedKeys(want) {
		gw := want[cidr]
		_, dst, err := net.ParseCIDR(cidr)
		if err != nil {
			continue
		}
		// A host route works only when the node is on a subnet this box is
		// attached to; otherwise it would need an overlay.
		via, err := netlink.RouteGet(gw)
		if err != nil || len(via) == 0 || via[0].Gw != nil {
			if !r.warned[cidr] {
				r.cfg.Log.Warn("node is not on a subnet this box shares: its pods are unreachable from here (no overlay yet)", "podCIDR", cidr, "nodeIP", gw)
				r.warned[cidr] = true
			}
			continue
		}
		rt := &netlink.Route{Dst: dst, Gw: gw, LinkIndex: via[0].LinkIndex, Protocol: RouteProtocol}
		if err := netlink.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", cidr, gw, err))
			continue
		}
		r.cfg.Log.Info("added pod route", "dst", cidr, "via", gw)
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]net.IP) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
