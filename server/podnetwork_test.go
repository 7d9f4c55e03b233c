package server

import (
	"strings"
	"testing"
)

func TestPodNetworkSettings(t *testing.T) {
	p := DefaultConfig().PodNetwork
	if err := p.validate(); err != nil || p.Backend != "auto" || p.VXLANPort != 4789 || p.VXLANVNI != 4242 {
		t.Fatalf("defaults: %+v %v", p, err)
	}
	withDefaults := func(change func(*PodNetworkSettings)) PodNetworkSettings {
		p := DefaultConfig().PodNetwork
		change(&p)
		return p
	}
	for _, tc := range []struct {
		p    PodNetworkSettings
		want string
	}{
		{withDefaults(func(p *PodNetworkSettings) { p.Backend = "flannel" }), `--pod-network-backend "flannel": want auto`},
		{withDefaults(func(p *PodNetworkSettings) { p.VXLANPort = 70000 }), "--vxlan-port 70000: not a UDP port"},
		{withDefaults(func(p *PodNetworkSettings) { p.VXLANVNI = 1 << 24 }), "--vxlan-vni 16777216: want 1 to 16777215"},
		{withDefaults(func(p *PodNetworkSettings) { p.VXLANVNI = -1 }), "--vxlan-vni -1"},
	} {
		err := tc.p.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line with %q", tc.p, err, tc.want)
		}
	}
}
