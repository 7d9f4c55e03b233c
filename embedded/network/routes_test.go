package network

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWanted(t *testing.T) {
	node := func(name, cidr string, addrs ...corev1.NodeAddress) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr},
			Status: corev1.NodeStatus{Addresses: addrs}}
	}
	internal := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
	}
	got := Wanted("box1", []corev1.Node{
		node("box1", "10.42.0.0/24", internal("10.99.0.1")),
		node("box2", "10.42.1.0/24", corev1.NodeAddress{Type: corev1.NodeHostName, Address: "box2"}, internal("10.99.0.2")),
		node("box3", "", internal("10.99.0.3")),           // no pod CIDR yet
		node("box4", "10.42.3.0/24", internal("fd00::4")), // no IPv4 address
		node("box5", "10.42.4.0/24", internal("10.99.0.5")),
	})
	if len(got) != 2 || got["10.42.1.0/24"].String() != "10.99.0.2" || got["10.42.4.0/24"].String() != "10.99.0.5" {
		t.Fatalf("Wanted = %v", got)
	}
}
