package network

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
)

// VXLAN defaults: the IANA port, and a VNI of kubox's own.
const (
	DefaultVXLANPort = 4789
	DefaultVXLANVNI  = 4242
	// VXLANDevice is the overlay's link; one per box, owned by kubox.
	VXLANDevice = "kubox-vxlan"
	// VXLANOverhead is what encapsulation costs per packet over IPv4:
	// outer IP (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) bytes.
	VXLANOverhead = 50
)

// VTEPMAC is the overlay MAC of the node with IPv4 address ip: a locally
// administered unicast address (0e:6b, then the four bytes of ip). Every box
// computes every other box's MAC from its InternalIP, so nothing has to be
// published on the Node.
func VTEPMAC(ip net.IP) net.HardwareAddr {
	v4 := ip.To4()
	if v4 == nil {
		return nil
	}
	return net.HardwareAddr{0x0e, 0x6b, v4[0], v4[1], v4[2], v4[3]}
}

// vtepIP is the overlay address of the node owning podCIDR: its network
// address (never given to a pod). Routes to a remote pod CIDR go via the
// remote's vtepIP; the local one sits on the VXLAN device so that the box's
// own traffic to remote pods leaves with an address they route back over
// the overlay.
func vtepIP(podCIDR *net.IPNet) net.IP { return podCIDR.IP.To4() }

// vxlanSpec is the device this box wants.
type vxlanSpec struct {
	VNI, Port int
	Local     net.IP // this node's IP: source of the outer packets
	Underlay  int    // index of the link holding Local; 0 if none
	MTU       int
}

// underlay finds the link holding ip and returns its index and MTU (0 and
// 1500 when no link has it).
func underlay(ip net.IP) (int, int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, 0, fmt.Errorf("link of %s: %w", ip, err)
			}
			return l.Attrs().Index, l.Attrs().MTU, nil
		}
	}
	return 0, 1500, nil
}

// ensureVXLAN creates or fixes the VXLAN device and returns its index.
func ensureVXLAN(spec vxlanSpec, localVTEP net.IP) (int, bool, error) {
	mac := VTEPMAC(spec.Local)
	cur, err := netlink.LinkByName(VXLANDevice)
	if err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return 0, false, fmt.Errorf("look up %s: %w", VXLANDevice, err)
	}
	created := false
	if vx, ok := cur.(*netlink.Vxlan); cur != nil && (!ok || vx.VxlanId != spec.VNI || vx.Port != spec.Port ||
		!vx.SrcAddr.Equal(spec.Local) || vx.Learning || vx.HardwareAddr.String() != mac.String()) {
		// Made by an earlier run with other settings (or not a vxlan at all):
		// start over rather than patch.
		if err := netlink.LinkDel(cur); err != nil {
			return 0, false, fmt.Errorf("delete outdated %s: %w", VXLANDevice, err)
		}
		cur = nil
	}
	if cur == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.HardwareAddr = VXLANDevice, spec.MTU, mac
		vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: spec.VNI, Port: spec.Port, SrcAddr: spec.Local,
			VtepDevIndex: spec.Underlay, Learning: false}
		if err := netlink.LinkAdd(vx); err != nil {
			return 0, false, fmt.Errorf("create %s (vxlan VNI %d, UDP port %d): %w", VXLANDevice, spec.VNI, spec.Port, err)
		}
		if cur, err = netlink.LinkByName(VXLANDevice); err != nil {
			return 0, false, fmt.Errorf("look up %s: %w", VXLANDevice, err)
		}
		created = true
	}
	if cur.Attrs().MTU != spec.MTU {
		if err := netlink.LinkSetMTU(cur, spec.MTU); err != nil {
			return 0, false, fmt.Errorf("set MTU of %s to %d: %w", VXLANDevice, spec.MTU, err)
		}
	}
	addrs, err := netlink.AddrList(cur, netlink.FAMILY_V4)
	if err != nil {
		return 0, false, fmt.Errorf("list addresses of %s: %w", VXLANDevice, err)
	}
	have := false
	for _, a := range addrs {
		if a.IP.Equal(localVTEP) {
			have = true
			continue
		}
		if err := netlink.AddrDel(cur, &a); err != nil {
			return 0, false, fmt.Errorf("delete address %s of %s: %w", a.IPNet, VXLANDevice, err)
		}
	}
	if !have {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: localVTEP, Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrAdd(cur, addr); err != nil {
			return 0, false, fmt.Errorf("add address %s to %s: %w", localVTEP, VXLANDevice, err)
		}
	}
	if cur.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(cur); err != nil {
			return 0, false, fmt.Errorf("set %s up: %w", VXLANDevice, err)
		}
	}
	return cur.Attrs().Index, created, nil
}

// deleteVXLAN removes the device (its routes, neighbours and FDB entries go
// with it). It reports whether there was one.
func deleteVXLAN() (bool, error) {
	l, err := netlink.LinkByName(VXLANDevice)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", VXLANDevice, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return false, fmt.Errorf("delete %s: %w", VXLANDevice, err)
	}
	return true, nil
}

// vtepPeer is what the device needs to reach one remote node.
type vtepPeer struct {
	VTEP   net.IP           // remote overlay address (its pod CIDR's network address)
	MAC    net.HardwareAddr // remote device MAC
	NodeIP net.IP           // where the encapsulated packets go
}

// reconcileNeighbours makes the device's ARP and FDB entries exactly peers'.
func reconcileNeighbours(index int, peers []vtepPeer) error {
	var errs []error
	wantARP := map[string]vtepPeer{}
	wantFDB := map[string]vtepPeer{}
	for _, p := range peers {
		wantARP[p.VTEP.String()] = p
		wantFDB[p.MAC.String()] = p
	}
	arp, err := netlink.NeighList(index, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", VXLANDevice, err)
	}
	for _, n := range arp {
		if p, ok := wantARP[n.IP.String()]; ok && n.HardwareAddr.String() == p.MAC.String() && n.State == netlink.NUD_PERMANENT {
			delete(wantARP, n.IP.String())
			continue
		}
		if err := netlink.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", n.IP, err))
		}
	}
	fdb, err := netlink.NeighList(index, syscall.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", VXLANDevice, err)
	}
	for _, n := range fdb {
		if p, ok := wantFDB[n.HardwareAddr.String()]; ok && n.IP.Equal(p.NodeIP) {
			delete(wantFDB, n.HardwareAddr.String())
			continue
		}
		if err := netlink.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("delete FDB entry %s: %w", n.HardwareAddr, err))
		}
	}
	for _, p := range wantFDB {
		if err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex: index, Family: syscall.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			IP: p.NodeIP, HardwareAddr: p.MAC,
		}); err != nil {
			errs = append(errs, fmt.Errorf("FDB entry %s dst %s: %w", p.MAC, p.NodeIP, err))
		}
	}
	for _, p := range wantARP {
		if err := netlink.NeighSet(&netlink.Neigh{
			LinkIndex: index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: p.VTEP, HardwareAddr: p.MAC,
		}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s lladdr %s: %w", p.VTEP, p.MAC, err))
		}
	}
	return errors.Join(errs...)
}
