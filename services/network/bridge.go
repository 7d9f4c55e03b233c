package network

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// dropStaleBridge deletes the bridge if it holds an IPv4 address outside
// podCIDR. That happens when this host's pod CIDR changed (a restore under
// another node name on the same box); the bridge plugin refuses to reuse a
// bridge whose address is not the new gateway, so every pod would fail. Pods
// on the old CIDR are already gone with their sandboxes. It reports whether
// it deleted anything.
func dropStaleBridge(name, podCIDR string) (bool, error) {
	_, cidr, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return false, fmt.Errorf("pod CIDR %q: %w", podCIDR, err)
	}
	link, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	stale := false
	for _, a := range addrs {
		if !cidr.Contains(a.IP) {
			stale = true
		}
	}
	if !stale {
		return false, nil
	}
	if err := netlink.LinkDel(link); err != nil {
		return false, fmt.Errorf("delete stale bridge %s: %w", name, err)
	}
	return true, nil
}
