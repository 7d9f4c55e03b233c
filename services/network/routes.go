package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/component"
)

// RouteProtocol marks the routes kubox adds (a private rtnetlink protocol
// number), so it can tell them from anyone else's when it cleans up.
const RouteProtocol = netlink.RouteProtocol(0x4b)

// Backend says how pod traffic reaches other boxes.
type Backend string

const (
	// BackendAuto: a host route to nodes on a subnet this box is attached
	// to, VXLAN to the others.
	BackendAuto Backend = "auto"
	// BackendHostGW: host routes only; nodes on other subnets are unreachable.
	BackendHostGW Backend = "host-gw"
	// BackendVXLAN: VXLAN to every node.
	BackendVXLAN Backend = "vxlan"
)

// ParseBackend checks a pod-network-backend value ("" is auto).
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case "":
		return BackendAuto, nil
	case BackendAuto, BackendHostGW, BackendVXLAN:
		return b, nil
	}
	return "", fmt.Errorf("--pod-network-backend %q: want auto (host routes where the node is on-link, VXLAN otherwise), host-gw or vxlan", s)
}

// RoutesConfig says whose pod CIDRs to route, and how.
type RoutesConfig struct {
	NodeName string // this node: its own pod CIDR is on its bridge
	NodeIP   net.IP // this node's address: the source of VXLAN packets
	Client   kubernetes.Interface
	Backend  Backend // default auto
	// VXLANPort and VXLANVNI must be the same on every box; defaults
	// DefaultVXLANPort and DefaultVXLANVNI.
	VXLANPort, VXLANVNI int
	// CleanupOnStop deletes kubox's pod routes and the VXLAN device when
	// the component stops.
	CleanupOnStop bool
	Interval      time.Duration // how often to reconcile; default 2s
	Log           *slog.Logger
}

// Routes sends each other node's pod CIDR to that node: a host route via
// its InternalIP when it is on a subnet this box shares, or through the
// VXLAN device (encapsulated to its InternalIP) when it is not.
type Routes struct {
	cfg RoutesConfig
	// loop reconciles until stopped (a failed pass is retried), so Routes
	// is not a component.Failer.
	loop   component.Goroutine
	warned map[string]bool
}

var _ component.Component = (*Routes)(nil)

// NewRoutes returns the component for cfg.
func NewRoutes(cfg RoutesConfig) *Routes {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Backend == "" {
		cfg.Backend = BackendAuto
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = DefaultVXLANPort
	}
	if cfg.VXLANVNI == 0 {
		cfg.VXLANVNI = DefaultVXLANVNI
	}
	return &Routes{cfg: cfg, warned: map[string]bool{}}
}

func (r *Routes) Name() string                    { return "pod-routes" }
func (r *Routes) Start(ctx context.Context) error { r.loop.Go(ctx, "pod routes", r.run); return nil }

// Stop ends the reconcile loop, then, with CleanupOnStop, deletes the
// routes and the VXLAN device.
func (r *Routes) Stop(ctx context.Context) error {
	if err := r.loop.Stop(ctx); err != nil {
		return err
	}
	if !r.cfg.CleanupOnStop {
		return nil
	}
	err := deleteRoutes()
	if deleted, verr := deleteVXLAN(); verr != nil {
		err = errors.Join(err, verr)
	} else if deleted {
		r.cfg.Log.Info("deleted VXLAN device", "device", VXLANDevice)
	}
	return err
}

func (r *Routes) run(ctx context.Context) error {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Warn("pod routes: will retry", "err", err)
		}
	}, r.cfg.Interval)
	return nil
}

// Path is how this box reaches one other node's pods.
type Path string

const (
	PathHostGW Path = "host-gw" // a route via the node's InternalIP
	PathVXLAN  Path = "vxlan"   // through the VXLAN device
	PathNone   Path = "none"    // unreachable (host-gw backend, node off-link)
)

// Peer is another node whose pods this box routes to.
type Peer struct {
	Node    string
	PodCIDR *net.IPNet
	NodeIP  net.IP
	Path    Path
}

// Plan lists the other nodes that have a pod CIDR and an IPv4 InternalIP,
// sorted by pod CIDR, each with its path under backend; onLink tells
// whether an address is on a subnet this box is attached to.
func Plan(self string, nodes []corev1.Node, backend Backend, onLink func(net.IP) bool) []Peer {
	var out []Peer
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" {
			continue
		}
		_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil || cidr.IP.To4() == nil {
			continue
		}
		ip := internalIPv4(n)
		if ip == nil {
			continue
		}
		p := Peer{Node: n.Name, PodCIDR: cidr, NodeIP: ip}
		switch {
		case backend == BackendVXLAN:
			p.Path = PathVXLAN
		case onLink(ip):
			p.Path = PathHostGW
		case backend == BackendHostGW:
			p.Path = PathNone
		default:
			p.Path = PathVXLAN
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.PodCIDR.String(), b.PodCIDR.String()) })
	return out
}

func internalIPv4(n corev1.Node) net.IP {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip := net.ParseIP(a.Address).To4(); ip != nil {
				return ip
			}
		}
	}
	return nil
}

// ownPodCIDR is this node's pod CIDR, or nil before it has one.
func ownPodCIDR(self string, nodes []corev1.Node) *net.IPNet {
	for _, n := range nodes {
		if n.Name == self {
			if _, cidr, err := net.ParseCIDR(n.Spec.PodCIDR); err == nil && cidr.IP.To4() != nil {
				return cidr
			}
		}
	}
	return nil
}

// onLink reports whether the kernel reaches ip without a gateway.
func onLink(ip net.IP) bool {
	via, err := netlink.RouteGet(ip)
	return err == nil && len(via) > 0 && via[0].Gw == nil
}

// Reconcile makes the VXLAN device, its neighbours and kubox's pod routes
// match the nodes: it adds what is missing and deletes what belongs to
// nodes that are gone, moved or now reached another way.
func (r *Routes) Reconcile(ctx context.Context) error {
	nodes, err := r.cfg.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	peers := Plan(r.cfg.NodeName, nodes.Items, r.cfg.Backend, onLink)
	var errs []error
	vxIndex, err := r.reconcileVXLAN(peers, ownPodCIDR(r.cfg.NodeName, nodes.Items))
	if err != nil {
		errs = append(errs, err)
	}
	want := map[string]netlink.Route{}
	for _, p := range peers {
		switch p.Path {
		case PathHostGW:
			via, err := netlink.RouteGet(p.NodeIP)
			if err != nil || len(via) == 0 {
				errs = append(errs, fmt.Errorf("route to node %s (%s): %v", p.Node, p.NodeIP, err))
				continue
			}
			want[p.PodCIDR.String()] = netlink.Route{Dst: p.PodCIDR, Gw: p.NodeIP, LinkIndex: via[0].LinkIndex, Protocol: RouteProtocol}
		case PathVXLAN:
			if vxIndex == 0 {
				continue
			}
			want[p.PodCIDR.String()] = netlink.Route{Dst: p.PodCIDR, Gw: vtepIP(p.PodCIDR), LinkIndex: vxIndex,
				Flags: int(netlink.FLAG_ONLINK), Protocol: RouteProtocol}
		case PathNone:
			if key := p.PodCIDR.String() + "/" + p.NodeIP.String(); !r.warned[key] {
				r.cfg.Log.Warn("node is not on a subnet this box shares: its pods are unreachable from here with pod-network-backend host-gw (use auto or vxlan)",
					"node", p.Node, "podCIDR", p.PodCIDR, "nodeIP", p.NodeIP)
				r.warned[key] = true
			}
		}
	}
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes: %w", err))...)
	}
	for _, rt := range have {
		if rt.Dst != nil {
			if w, ok := want[rt.Dst.String()]; ok && w.Gw.Equal(rt.Gw) && w.LinkIndex == rt.LinkIndex {
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
	for _, p := range peers {
		rt, ok := want[p.PodCIDR.String()]
		if !ok {
			continue
		}
		if err := netlink.RouteReplace(&rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s (%s): %w", p.PodCIDR, rt.Gw, p.Path, err))
			continue
		}
		r.cfg.Log.Info("added pod route", "node", p.Node, "dst", p.PodCIDR, "via", rt.Gw, "path", p.Path)
	}
	return errors.Join(errs...)
}

// reconcileVXLAN creates the VXLAN device when some peer needs it (and this
// node has its pod CIDR), sets its neighbour and FDB entries, and deletes
// it when no peer needs it. It returns the device's index, 0 for none.
func (r *Routes) reconcileVXLAN(peers []Peer, own *net.IPNet) (int, error) {
	var vtep []vtepPeer
	for _, p := range peers {
		if p.Path == PathVXLAN {
			vtep = append(vtep, vtepPeer{VTEP: vtepIP(p.PodCIDR), MAC: VTEPMAC(p.NodeIP), NodeIP: p.NodeIP})
		}
	}
	if len(vtep) == 0 || own == nil {
		deleted, err := deleteVXLAN()
		if deleted {
			r.cfg.Log.Info("deleted VXLAN device: no node needs it", "device", VXLANDevice)
		}
		return 0, err
	}
	if r.cfg.NodeIP == nil {
		return 0, errors.New("VXLAN needs this node's IP (--node-ip)")
	}
	index, mtu, err := underlay(r.cfg.NodeIP)
	if err != nil {
		return 0, err
	}
	spec := vxlanSpec{VNI: r.cfg.VXLANVNI, Port: r.cfg.VXLANPort, Local: r.cfg.NodeIP, Underlay: index, MTU: mtu - VXLANOverhead}
	vx, created, err := ensureVXLAN(spec, vtepIP(own))
	if err != nil {
		return 0, err
	}
	if created {
		r.cfg.Log.Info("created VXLAN device", "device", VXLANDevice, "vni", spec.VNI, "port", spec.Port,
			"local", spec.Local, "mtu", spec.MTU, "mac", VTEPMAC(spec.Local).String())
	}
	return vx, reconcileNeighbours(vx, vtep)
}

// deleteRoutes deletes every route kubox added.
func deleteRoutes() error {
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, rt := range have {
		if err := netlink.RouteDel(&rt); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rt.Dst, err))
		}
	}
	return errors.Join(errs...)
}
