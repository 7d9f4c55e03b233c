package netpol

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// pkt is one new connection's first packet.
type pkt struct {
	src, dst string
	proto    string // tcp, udp, sctp
	port     int32
}

// allowed evaluates rs as the kernel would for p seen on this box's
// forward hook: egress of a local source, then ingress of a local
// destination.
func allowed(t *testing.T, rs *Ruleset, p pkt) bool {
	t.Helper()
	if g, ok := rs.Egress[p.src]; ok {
		if eval(t, rs, g, p) != egressVerd {
			return false
		}
	}
	if g, ok := rs.Ingress[p.dst]; ok {
		return eval(t, rs, g, p) == acceptVerd
	}
	return true
}

// eval runs chain on p and returns the verdict ("" when it fell off the end).
func eval(t *testing.T, rs *Ruleset, chain string, p pkt) string {
	t.Helper()
	rules, ok := rs.Chains[chain]
	if !ok {
		t.Fatalf("no chain %s", chain)
	}
	for _, r := range rules {
		if r.Jump != "" {
			if v := eval(t, rs, r.Jump, p); v != "" {
				return v
			}
			continue
		}
		if matches(t, rs, r, p) {
			return r.Verdict
		}
	}
	return ""
}

func matches(t *testing.T, rs *Ruleset, r Rule, p pkt) bool {
	peer := p.src
	if r.SrcDst == "daddr" {
		peer = p.dst
	}
	if r.PeerSet != "" && !inSet(t, rs, r.PeerSet, peer) {
		return false
	}
	if r.CIDR != "" {
		if !inCIDR(t, r.CIDR, peer) {
			return false
		}
		for _, e := range r.Except {
			if inCIDR(t, e, peer) {
				return false
			}
		}
	}
	if r.NamedSet != "" {
		return inSet(t, rs, r.NamedSet, p.dst, p.proto, strconv.Itoa(int(p.port)))
	}
	if r.Proto != "" && r.Proto != p.proto {
		return false
	}
	if r.Port != 0 {
		end := r.Port
		if r.EndPort > end {
			end = r.EndPort
		}
		return p.port >= r.Port && p.port <= end
	}
	return true
}

func inSet(t *testing.T, rs *Ruleset, name string, key ...string) bool {
	s, ok := rs.Sets[name]
	if !ok {
		t.Fatalf("no set %s", name)
	}
	return slices.ContainsFunc(s.Elements, func(e []string) bool { return slices.Equal(e, key) })
}

func inCIDR(t *testing.T, cidr, ip string) bool {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatalf("bad CIDR %q", cidr)
	}
	return n.Contains(net.ParseIP(ip))
}

// The test cluster: namespaces a (team=x) and b (team=y), pods on this box
// ("here") and another ("there").
const here = "box1"

func pod(ns, name, ip, node string, lbl map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning},
	}
}

func ns(name string, lbl map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func policy(ns, name string, podSel *metav1.LabelSelector, spec func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if podSel != nil {
		p.Spec.PodSelector = *podSel
	}
	if spec != nil {
		spec(&p.Spec)
	}
	return p
}

func tcp(port int) networkingv1.NetworkPolicyPort {
	pr := corev1.ProtocolTCP
	v := intstr.FromInt32(int32(port))
	return networkingv1.NetworkPolicyPort{Protocol: &pr, Port: &v}
}

func proto(p corev1.Protocol, port int) networkingv1.NetworkPolicyPort {
	v := intstr.FromInt32(int32(port))
	return networkingv1.NetworkPolicyPort{Protocol: &p, Port: &v}
}

func named(name string) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Port: &v}
}

const (
	webIP    = "10.42.0.10" // a/web, here, port http=8080
	clientIP = "10.42.0.11" // a/client, here
	otherIP  = "10.42.1.20" // a/other, there
	bIP      = "10.42.1.21" // b/client, there
	bWebIP   = "10.42.0.12" // b/web, here
	outside  = "192.0.2.7"
	nodeIP   = "172.16.0.1"
)

func cluster(pols ...*networkingv1.NetworkPolicy) Input {
	return Input{
		NodeName:   here,
		Namespaces: []*corev1.Namespace{ns("a", map[string]string{"team": "x"}), ns("b", map[string]string{"team": "y"})},
		Pods: []*corev1.Pod{
			pod("a", "web", webIP, here, map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			pod("a", "client", clientIP, here, map[string]string{"app": "client"}),
			pod("a", "other", otherIP, "box2", map[string]string{"app": "other"}),
			pod("b", "client", bIP, "box2", map[string]string{"app": "client"}),
			pod("b", "web", bWebIP, here, map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 9090}),
		},
		Policies: pols,
	}
}

type check struct {
	p    pkt
	want bool
}

func run(t *testing.T, in Input, checks ...check) {
	t.Helper()
	rs := Compile(in)
	for _, c := range checks {
		if got := allowed(t, rs, c.p); got != c.want {
			t.Errorf("%s -> %s %s/%d: allowed=%v, want %v", c.p.src, c.p.dst, c.p.proto, c.p.port, got, c.want)
		}
	}
}

func TestNoPolicyAllowsAll(t *testing.T) {
	rs := Compile(cluster())
	if len(rs.Ingress)+len(rs.Egress)+len(rs.Chains) != 0 {
		t.Errorf("rules without policies: %+v", rs)
	}
}

func TestDefaultDenyIngress(t *testing.T) {
	deny := policy("a", "deny", &metav1.LabelSelector{}, nil)
	run(t, cluster(deny),
		check{pkt{clientIP, webIP, "tcp", 80}, false},
		check{pkt{bIP, webIP, "tcp", 80}, false},
		check{pkt{outside, clientIP, "udp", 53}, false},
		// b is not selected; egress is not isolated.
		check{pkt{webIP, bWebIP, "tcp", 80}, true},
		check{pkt{webIP, outside, "tcp", 443}, true},
	)
	// Pods of another box are filtered there, not here.
	if _, ok := Compile(cluster(deny)).Ingress[otherIP]; ok {
		t.Error("a pod of another box got an ingress entry")
	}
}

func TestPodSelector(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}}}}
	})
	run(t, cluster(pol),
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{otherIP, webIP, "tcp", 80}, false},
		// A podSelector alone selects in the policy's namespace only.
		check{pkt{bIP, webIP, "tcp", 80}, false},
		// Unselected pods stay open.
		check{pkt{otherIP, clientIP, "tcp", 80}, true},
	)
}

func TestNamespaceSelector(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y")}}}}
	})
	run(t, cluster(pol),
		check{pkt{bIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, webIP, "tcp", 80}, false},
	)
	all := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
	})
	run(t, cluster(all),
		check{pkt{bIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{outside, webIP, "tcp", 80}, false},
	)
}

func TestBothSelectors(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: sel("team", "y"), PodSelector: sel("app", "client")},
		}}}
	})
	run(t, cluster(pol),
		check{pkt{bIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, webIP, "tcp", 80}, false}, // right label, wrong namespace
		check{pkt{bWebIP, webIP, "tcp", 80}, false},   // right namespace, wrong label
	)
}

func TestIPBlockExcept(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.0/29"}}},
		}}}
	})
	run(t, cluster(pol),
		check{pkt{"192.0.2.100", webIP, "tcp", 80}, true},
		check{pkt{outside, webIP, "tcp", 80}, false}, // .7 is in the except
		check{pkt{clientIP, webIP, "tcp", 80}, false},
	)
}

// IPv6 blocks are left out (an IPv4 table cannot hold them); host bits
// are cleared, as nft wants.
func TestIPBlockForms(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "::/0"}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.77/24", Except: []string{"2001:db8::/32", "192.0.2.7/32"}}},
		}}}
	})
	rs := Compile(cluster(pol))
	got := rs.Chains["np-p0-in"]
	if len(got) != 1 || got[0].String() != "ip saddr 192.0.2.0/24 ip saddr != { 192.0.2.7/32 } accept" {
		t.Errorf("rules: %v", got)
	}
	// Only IPv6 peers: the rule allows nothing (it does not become "any").
	only6 := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "::/0"}}}}}
	})
	run(t, cluster(only6), check{pkt{clientIP, webIP, "tcp", 80}, false})
}

func TestPorts(t *testing.T) {
	end := int32(9000)
	rng := tcp(8000)
	rng.EndPort = &end
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			tcp(80), proto(corev1.ProtocolUDP, 53), proto(corev1.ProtocolSCTP, 7777), rng,
		}}}
	})
	run(t, cluster(pol),
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, webIP, "tcp", 81}, false},
		check{pkt{clientIP, webIP, "udp", 80}, false},
		check{pkt{clientIP, webIP, "udp", 53}, true},
		check{pkt{clientIP, webIP, "sctp", 7777}, true},
		check{pkt{clientIP, webIP, "tcp", 7777}, false},
		check{pkt{clientIP, webIP, "tcp", 8000}, true},
		check{pkt{clientIP, webIP, "tcp", 8500}, true},
		check{pkt{clientIP, webIP, "tcp", 9000}, true},
		check{pkt{clientIP, webIP, "tcp", 9001}, false},
	)
	// A port with no protocol is TCP; a protocol with no port is all its ports.
	udp := corev1.ProtocolUDP
	pol2 := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		v := intstr.FromInt32(80)
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &v}, {Protocol: &udp}}}}
	})
	run(t, cluster(pol2),
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, webIP, "udp", 12345}, true},
		check{pkt{clientIP, webIP, "tcp", 12345}, false},
	)
}

func TestNamedPort(t *testing.T) {
	// Policy in namespace a, selecting every web pod there; "http" is 8080.
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{named("http")}}}
	})
	polB := policy("b", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{named("http")}}}
	})
	run(t, cluster(pol, polB),
		check{pkt{clientIP, webIP, "tcp", 8080}, true},
		check{pkt{clientIP, webIP, "tcp", 9090}, false},
		check{pkt{clientIP, webIP, "udp", 8080}, false},
		// The same name resolves per pod: 9090 for b/web.
		check{pkt{clientIP, bWebIP, "tcp", 9090}, true},
		check{pkt{clientIP, bWebIP, "tcp", 8080}, false},
	)
	// Egress: the name resolves against the destination pods.
	eg := policy("a", "client", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{named("http")}}}
	})
	run(t, cluster(eg),
		check{pkt{clientIP, webIP, "tcp", 8080}, true},
		check{pkt{clientIP, bWebIP, "tcp", 9090}, true},
		check{pkt{clientIP, bWebIP, "tcp", 8080}, false},
		check{pkt{clientIP, outside, "tcp", 8080}, false},
	)
}

func TestEgress(t *testing.T) {
	deny := policy("a", "deny", &metav1.LabelSelector{}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	})
	run(t, cluster(deny),
		check{pkt{clientIP, webIP, "tcp", 80}, false},
		check{pkt{clientIP, nodeIP, "udp", 53}, false}, // DNS on the node: denied too
		check{pkt{clientIP, outside, "tcp", 443}, false},
		// Ingress is not isolated by an egress-only policy.
		check{pkt{bIP, webIP, "tcp", 80}, true},
		check{pkt{bWebIP, outside, "tcp", 80}, true},
	)
	dns := policy("a", "dns", &metav1.LabelSelector{}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{proto(corev1.ProtocolUDP, 53), tcp(53)}}}
	})
	toWeb := policy("a", "to-web", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}
	})
	run(t, cluster(deny, dns, toWeb),
		check{pkt{clientIP, nodeIP, "udp", 53}, true},
		check{pkt{clientIP, nodeIP, "tcp", 53}, true},
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{clientIP, bWebIP, "tcp", 80}, false},
		check{pkt{webIP, clientIP, "tcp", 80}, false},
	)
	// Egress and ingress both apply to traffic between two local pods.
	inDeny := policy("a", "in-deny", sel("app", "web"), nil)
	run(t, cluster(dns, toWeb, inDeny),
		check{pkt{clientIP, webIP, "tcp", 80}, false},
	)
}

func TestEgressIPBlock(t *testing.T) {
	pol := policy("a", "out", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.128/25"}}}},
			Ports: []networkingv1.NetworkPolicyPort{tcp(443)},
		}}
	})
	run(t, cluster(pol),
		check{pkt{clientIP, outside, "tcp", 443}, true},
		check{pkt{clientIP, outside, "tcp", 80}, false},
		check{pkt{clientIP, "192.0.2.200", "tcp", 443}, false},
	)
}

func TestPoliciesAddUp(t *testing.T) {
	fromClient := policy("a", "p1", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}}}}
	})
	fromB := policy("a", "p2", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y")}}}}
	})
	allowAll := policy("a", "p3", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
	})
	run(t, cluster(fromClient, fromB),
		check{pkt{clientIP, webIP, "tcp", 80}, true},
		check{pkt{bIP, webIP, "tcp", 80}, true},
		check{pkt{otherIP, webIP, "tcp", 80}, false},
	)
	run(t, cluster(fromClient, allowAll),
		check{pkt{otherIP, webIP, "tcp", 80}, true},
		check{pkt{outside, webIP, "udp", 9}, true},
	)
}

func TestRelabel(t *testing.T) {
	pol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}}}}
	})
	in := cluster(pol)
	in.Pods[2].Labels = map[string]string{"app": "client"} // a/other becomes a client
	run(t, in, check{pkt{otherIP, webIP, "tcp", 80}, true})
	in.Pods[0].Labels = map[string]string{"app": "db"} // web is no longer selected
	run(t, in, check{pkt{bIP, webIP, "tcp", 80}, true})
	// A namespace relabelled into the selector.
	nsPol := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "x")}}}}
	})
	in = cluster(nsPol)
	run(t, in, check{pkt{bIP, webIP, "tcp", 80}, false})
	in.Namespaces[1].Labels = map[string]string{"team": "x"}
	run(t, in, check{pkt{bIP, webIP, "tcp", 80}, true})
}

func TestPodsWithoutPodNetworkAddress(t *testing.T) {
	in := cluster(policy("a", "deny", &metav1.LabelSelector{}, nil))
	host := pod("a", "host", nodeIP, here, nil)
	host.Spec.HostNetwork = true
	done := pod("a", "done", "10.42.0.99", here, nil)
	done.Status.Phase = corev1.PodSucceeded
	pending := pod("a", "pending", "", here, nil)
	in.Pods = append(in.Pods, host, done, pending)
	rs := Compile(in)
	for _, ip := range []string{nodeIP, "10.42.0.99", ""} {
		if _, ok := rs.Ingress[ip]; ok {
			t.Errorf("%q has rules", ip)
		}
	}
}

// Pods selected by the same policies share one group chain.
func TestGroupsShared(t *testing.T) {
	rs := Compile(cluster(policy("a", "deny", &metav1.LabelSelector{}, nil)))
	if rs.Ingress[webIP] == "" || rs.Ingress[webIP] != rs.Ingress[clientIP] {
		t.Errorf("ingress groups: %v", rs.Ingress)
	}
}

func TestDeterministic(t *testing.T) {
	a := cluster(policy("a", "p1", sel("app", "web"), nil), policy("b", "p2", nil, nil))
	b := a
	b.Policies = []*networkingv1.NetworkPolicy{a.Policies[1], a.Policies[0]}
	b.Pods = slices.Clone(a.Pods)
	slices.Reverse(b.Pods)
	if ra, rb := render(Compile(a)), render(Compile(b)); ra != rb {
		t.Errorf("order of the input changed the ruleset:\n%s\n---\n%s", ra, rb)
	}
}

func TestRuleText(t *testing.T) {
	for _, c := range []struct {
		r    Rule
		want string
	}{
		{Rule{Jump: "np-p0-in"}, "jump np-p0-in"},
		{Rule{SrcDst: "saddr", PeerSet: "np-p0-in0", Proto: "tcp", Port: 80, Verdict: "accept"}, "ip saddr @np-p0-in0 meta l4proto tcp th dport 80 accept"},
		{Rule{SrcDst: "daddr", CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.2.0.0/16"}, Verdict: egressVerd},
			"ip daddr 10.0.0.0/8 ip daddr != { 10.1.0.0/16, 10.2.0.0/16 } goto np-to"},
		{Rule{Proto: "udp", Port: 1000, EndPort: 2000, Verdict: "accept"}, "meta l4proto udp th dport 1000-2000 accept"},
		{Rule{NamedSet: "np-p0-in0-n0", Verdict: "accept"}, "ip daddr . meta l4proto . th dport @np-p0-in0-n0 accept"},
		{Rule{Verdict: "drop"}, "drop"},
	} {
		if got := c.r.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func render(rs *Ruleset) string {
	var b strings.Builder
	for _, k := range sortedKeys(rs.Chains) {
		b.WriteString(k + ":\n")
		for _, r := range rs.Chains[k] {
			b.WriteString("  " + r.String() + "\n")
		}
	}
	for _, k := range sortedKeys(rs.Sets) {
		b.WriteString(k + " " + rs.Sets[k].Type + "\n")
	}
	for _, k := range sortedKeys(rs.Ingress) {
		b.WriteString("in " + k + " " + rs.Ingress[k] + "\n")
	}
	return b.String()
}
