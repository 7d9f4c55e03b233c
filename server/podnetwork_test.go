package server

import (
	"strings"
	"testing"
)

func TestPodNetworkSettings(t *testing.T) {
	var p PodNetworkSettings
	if err := p.complete(); err != nil || p.Backend != "auto" || p.VXLANPort != 4789 || p.VXLANVNI != 4242 {
		t.Fatalf("defaults: %+v %v", p, err)
	}
	for _, tc := range []struct {
		p    PodNetworkSettings
		want string
	}{
		{PodNetworkSettings{Backend: "flannel"}, `--pod-network-backend "flannel": want auto`},
		{PodNetworkSettings{VXLANPort: 70000}, "--vxlan-port 70000: not a UDP port"},
		{PodNetworkSettings{VXLANVNI: 1 << 24}, "--vxlan-vni 16777216: want 1 to 16777215"},
		{PodNetworkSettings{VXLANVNI: -1}, "--vxlan-vni -1"},
	} {
		err := tc.p.complete()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line with %q", tc.p, err, tc.want)
		}
	}
}
