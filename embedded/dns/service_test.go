package dns

import (
	"context"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The API side is exercised for one node by the e2e test against a real
// apiserver; these cover what one box cannot show: other servers' endpoints
// following their Nodes, and a changed --cluster-dns.

func node(name string, ready corev1.ConditionStatus) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}},
	}
}

func serverDNS(name, ip, clusterDNS string, c *fake.Clientset) *DNS {
	return New(Config{NodeName: name, NodeIP: net.ParseIP(ip), Port: 53, ClusterDNS: net.ParseIP(clusterDNS), Client: c})
}

func TestServiceAndPeers(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(node("a", corev1.ConditionTrue), node("b", corev1.ConditionTrue))
	a, b := serverDNS("a", "192.0.2.1", "10.43.0.10", c), serverDNS("b", "192.0.2.2", "10.43.0.10", c)
	for _, d := range []*DNS{a, b} {
		if err := d.syncService(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := c.CoreV1().Services(namespace).Get(ctx, serviceName, metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != "10.43.0.10" || svc.Spec.Selector != nil {
		t.Fatalf("service %+v %v", svc, err)
	}
	readyOf := func(slice string) bool {
		s, err := c.DiscoveryV1().EndpointSlices(namespace).Get(ctx, slice, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *s.Endpoints[0].Conditions.Ready
	}
	if !readyOf("kube-dns-a") || !readyOf("kube-dns-b") {
		t.Fatal("both servers' endpoints should be ready")
	}

	// b's box dies: its Node turns NotReady and a drops b's endpoint.
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, node("b", corev1.ConditionUnknown), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.syncService(ctx, true); err != nil {
		t.Fatal(err)
	}
	if readyOf("kube-dns-b") || !readyOf("kube-dns-a") {
		t.Fatal("a dead server's endpoint should be not ready, the live one ready")
	}
	// b comes back and marks itself ready.
	if err := b.syncService(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !readyOf("kube-dns-b") {
		t.Fatal("a returning server's endpoint should be ready again")
	}
	// a stops: its own endpoint goes not ready.
	if err := a.applySlice(ctx, c, false); err != nil {
		t.Fatal(err)
	}
	if readyOf("kube-dns-a") {
		t.Fatal("a stopped server's endpoint should be not ready")
	}

	// --cluster-dns changed: the Service is replaced with the new address.
	moved := serverDNS("a", "192.0.2.1", "10.43.0.53", c)
	if err := moved.syncService(ctx, true); err != nil {
		t.Fatal(err)
	}
	svc, err = c.CoreV1().Services(namespace).Get(ctx, serviceName, metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != "10.43.0.53" {
		t.Fatalf("service after --cluster-dns change: %+v %v", svc, err)
	}
}
