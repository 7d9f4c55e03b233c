package dns

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

func TestCorefileAccess(t *testing.T) {
	d := newTestDNS(t, "nameserver 192.0.2.1\n", "site.example {\n    forward . 192.0.2.53\n}\n")
	_, d.cfg.ClusterCIDR, _ = net.ParseCIDR("10.42.0.0/16")
	d.cfg.AllowCIDRs = []string{"198.51.100.0/24", "203.0.113.7"}
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(d.cfg.CorefilePath)
	line := "    kubox_access 127.0.0.0/8 ::1 127.0.0.1 10.42.0.0/16 198.51.100.0/24 203.0.113.7\n"
	// Every server block, the operator's too: a stub zone answers only
	// those who may ask the cluster zone.
	for _, block := range []string{".:1053 {\n    bind 127.0.0.1\n", "site.example:1053 {\n    bind 127.0.0.1\n"} {
		if !strings.Contains(string(body), block+line) {
			t.Errorf("Corefile lacks %q:\n%s", block+line, body)
		}
	}

	// An operator cannot switch the check off or widen it from the DNS
	// config: that is dns-allow-cidrs's job.
	d = newTestDNS(t, "nameserver 192.0.2.1\n", "site.example {\n    kubox_access 0.0.0.0/0\n    forward . 192.0.2.53\n}\n")
	if err := d.Init(context.Background()); err == nil || !strings.Contains(err.Error(), "kubox_access") {
		t.Errorf("kubox_access in the operator's DNS config: %v", err)
	}
	// A bad allowed range stops the start with the value named.
	d = newTestDNS(t, "nameserver 192.0.2.1\n", "")
	d.cfg.AllowCIDRs = []string{"10.0.0.0/33"}
	if err := d.Init(context.Background()); err == nil || !strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Errorf("a bad allowed range: %v", err)
	}
}

func TestAccessRefusesStrangers(t *testing.T) {
	var nets []string
	a := &access{boxes: &boxes{}, next: test.NextHandler(dns.RcodeSuccess, nil)}
	for _, s := range []string{"10.42.0.0/16", "127.0.0.0/8", "::1", "192.0.2.1"} {
		n, err := parseNet(s)
		if err != nil {
			t.Fatal(err)
		}
		a.nets, nets = append(a.nets, n), append(nets, n.String())
	}
	a.boxes.set([]net.IP{net.ParseIP("192.0.2.2")})
	ask := func(src string, tcp bool) int {
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: src, TCP: tcp})
		m := new(dns.Msg)
		m.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
		rc, err := a.ServeDNS(context.Background(), rec, m)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Msg != nil {
			return rec.Msg.Rcode
		}
		return rc
	}
	for src, want := range map[string]int{
		"10.42.3.4":   dns.RcodeSuccess, // a pod
		"127.0.0.1":   dns.RcodeSuccess, // the box itself
		"::1":         dns.RcodeSuccess,
		"192.0.2.1":   dns.RcodeSuccess, // this node
		"192.0.2.2":   dns.RcodeSuccess, // another Node
		"192.0.2.3":   dns.RcodeRefused, // a host on the LAN
		"8.8.8.8":     dns.RcodeRefused,
		"2001:db8::1": dns.RcodeRefused,
	} {
		for _, tcp := range []bool{false, true} {
			if got := ask(src, tcp); got != want {
				t.Errorf("query from %s (tcp %v): %s, want %s (allowed: %v + Nodes)", src, tcp, dns.RcodeToString[got], dns.RcodeToString[want], nets)
			}
		}
	}
}

func TestWatchNodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	withAddr := func(name string, addrs ...corev1.NodeAddress) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
	}
	c := fake.NewClientset(withAddr("a", corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "a"}))
	d := New(Config{NodeName: "a", NodeIP: net.ParseIP("192.0.2.1"), Client: c})
	stop := d.watchNodes(ctx)
	defer func() { cancel(); stop() }() // the watch ends with ctx
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if err := wait.PollUntilContextCancel(wctx, 20*time.Millisecond, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	b := net.ParseIP("192.0.2.2")
	waitFor("the first Node's address", func() bool { return d.boxes.has(net.ParseIP("192.0.2.1")) && !d.boxes.has(b) })
	// A box joins: its Node's address may ask at once; it leaves: no more.
	if _, err := c.CoreV1().Nodes().Create(ctx, withAddr("b", corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.2"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a joining Node's address", func() bool { return d.boxes.has(b) })
	if err := c.CoreV1().Nodes().Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a removed Node's address gone", func() bool { return !d.boxes.has(b) })
}
