package network

import (
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPlan(t *testing.T) {
	node := func(name, cidr string, addrs ...corev1.NodeAddress) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr},
			Status: corev1.NodeStatus{Addresses: addrs}}
	}
	internal := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
	}
	nodes := []corev1.Node{
		node("box5", "10.42.4.0/24", internal("10.98.0.5")), // another subnet
		node("box1", "10.42.0.0/24", internal("10.99.0.1")),
		node("box2", "10.42.1.0/24", corev1.NodeAddress{Type: corev1.NodeHostName, Address: "box2"}, internal("10.99.0.2")),
		node("box3", "", internal("10.99.0.3")),           // no pod CIDR yet
		node("box4", "10.42.3.0/24", internal("fd00::4")), // no IPv4 address
		node("box6", "bogus", internal("10.99.0.6")),
	}
	onLink := func(ip net.IP) bool { return strings.HasPrefix(ip.String(), "10.99.0.") }
	for _, tc := range []struct {
		backend Backend
		want    string
	}{
		{BackendAuto, "box2 10.42.1.0/24 10.99.0.2 host-gw, box5 10.42.4.0/24 10.98.0.5 vxlan"},
		{BackendHostGW, "box2 10.42.1.0/24 10.99.0.2 host-gw, box5 10.42.4.0/24 10.98.0.5 none"},
		{BackendVXLAN, "box2 10.42.1.0/24 10.99.0.2 vxlan, box5 10.42.4.0/24 10.98.0.5 vxlan"},
	} {
		var got []string
		for _, p := range Plan("box1", nodes, tc.backend, onLink) {
			got = append(got, strings.Join([]string{p.Node, p.PodCIDR.String(), p.NodeIP.String(), string(p.Path)}, " "))
		}
		if s := strings.Join(got, ", "); s != tc.want {
			t.Errorf("Plan(%s):\n got %s\nwant %s", tc.backend, s, tc.want)
		}
	}
}

func TestParseBackend(t *testing.T) {
	for in, want := range map[string]Backend{"": BackendAuto, "auto": BackendAuto, "host-gw": BackendHostGW, "vxlan": BackendVXLAN} {
		if got, err := ParseBackend(in); err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseBackend("flannel"); err == nil || !strings.Contains(err.Error(), "want auto") {
		t.Errorf("ParseBackend(flannel): %v", err)
	}
}

func TestVTEP(t *testing.T) {
	mac := VTEPMAC(net.ParseIP("10.99.2.17"))
	if mac.String() != "0e:6b:0a:63:02:11" {
		t.Errorf("VTEPMAC = %s", mac)
	}
	// Locally administered, unicast: never a vendor's MAC, never multicast.
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("VTEPMAC %s is not a locally administered unicast address", mac)
	}
	if VTEPMAC(net.ParseIP("10.99.2.18")).String() == mac.String() {
		t.Error("two node IPs, one MAC")
	}
	if VTEPMAC(net.ParseIP("fd00::1")) != nil {
		t.Error("VTEPMAC of an IPv6 address")
	}
	_, cidr, _ := net.ParseCIDR("10.42.7.0/24")
	if got := vtepIP(cidr).String(); got != "10.42.7.0" {
		t.Errorf("vtepIP = %s", got)
	}
}
