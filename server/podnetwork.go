package server

import (
	"fmt"

	"github.com/kubox/kubox/services/network"
)

// PodNetworkSettings are `kubox server`'s keys for how pod traffic
// crosses boxes (see network.RoutesConfig).
type PodNetworkSettings struct {
	Backend   string // auto (default), host-gw or vxlan
	VXLANPort int    // UDP port; default network.DefaultVXLANPort
	VXLANVNI  int    // default network.DefaultVXLANVNI
}

// validate checks the settings, one line per error.
func (p *PodNetworkSettings) validate() error {
	if _, err := network.ParseBackend(p.Backend); err != nil {
		return err
	}
	if p.VXLANPort < 1 || p.VXLANPort > 65535 {
		return fmt.Errorf("--vxlan-port %d: not a UDP port (default %d)", p.VXLANPort, network.DefaultVXLANPort)
	}
	if p.VXLANVNI < 1 || p.VXLANVNI > 1<<24-1 {
		return fmt.Errorf("--vxlan-vni %d: want 1 to 16777215 (default %d)", p.VXLANVNI, network.DefaultVXLANVNI)
	}
	return nil
}
