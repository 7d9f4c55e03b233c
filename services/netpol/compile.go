package netpol

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Names of the fixed objects in kubox's table. Every object this package
// owns starts with Prefix, so a sync can find and replace all of them.
const (
	Prefix       = "np-"
	forwardChain = "np-forward" // base chain, hook forward
	inputChain   = "np-input"   // base chain, hook input: pods to this box (DNS on the node IP)
	toChain      = "np-to"      // ingress check of the destination, after egress passed
	ingressMap   = "np-in-pods" // local pod IP -> goto its ingress group chain
	egressMap    = "np-eg-pods" // local pod IP -> goto its egress group chain
	ipSetType    = "ipv4_addr"  //
	portSetType  = "ipv4_addr . inet_proto . inet_service"
	verdictType  = "ipv4_addr : verdict"
	acceptVerd   = "accept"
	egressVerd   = "goto " + toChain
)

// Input is what the compile step reads: every pod, namespace and policy of
// the cluster, and which node is this box.
type Input struct {
	NodeName   string
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Ruleset is the compiled form of the cluster's policies for one box: the
// chains, sets and verdict-map entries of kubox's table that enforce them.
// Render turns it into nft commands; tests evaluate it directly.
type Ruleset struct {
	// Sets are named sets of pod IPs (Type ipSetType) or of pod IP,
	// protocol and port (portSetType, named ports), by name.
	Sets map[string]*Set
	// Chains are the regular chains (groups and policies), by name.
	Chains map[string][]Rule
	// Ingress and Egress map a local, isolated pod's IP to the group chain
	// that decides its traffic.
	Ingress map[string]string
	Egress  map[string]string
}

// Set is one named set.
type Set struct {
	Type     string
	Elements [][]string // each element's key parts
}

// Rule is one rule of a regular chain: either a jump to a policy chain, or
// a match (all given parts must hold) with a verdict.
type Rule struct {
	Jump string // "jump <chain>"; nothing else is set then
	// Peer: SrcDst is "saddr" (ingress) or "daddr" (egress); PeerSet names
	// a set of pod IPs, or CIDR (with Except) an ipBlock; neither: any peer.
	SrcDst  string
	PeerSet string
	CIDR    string
	Except  []string
	// Port: Proto "" is any traffic; Port 0 is every port of Proto.
	Proto   string
	Port    int32
	EndPort int32
	// NamedSet: the destination's IP, protocol and port must be in it (a
	// named port, resolved per pod).
	NamedSet string
	Verdict  string // "drop", "accept" or egressVerd
}

// String renders r as nft rule text.
func (r Rule) String() string {
	if r.Jump != "" {
		return "jump " + r.Jump
	}
	var p []string
	switch {
	case r.PeerSet != "":
		p = append(p, "ip", r.SrcDst, "@"+r.PeerSet)
	case r.CIDR != "":
		p = append(p, "ip", r.SrcDst, r.CIDR)
		if len(r.Except) > 0 {
			p = append(p, "ip", r.SrcDst, "!=", "{ "+strings.Join(r.Except, ", ")+" }")
		}
	}
	if r.NamedSet != "" {
		p = append(p, "ip daddr . meta l4proto . th dport", "@"+r.NamedSet)
	} else if r.Proto != "" {
		p = append(p, "meta l4proto", r.Proto)
		if r.Port != 0 {
			port := strconv.Itoa(int(r.Port))
			if r.EndPort > r.Port {
				port += "-" + strconv.Itoa(int(r.EndPort))
			}
			p = append(p, "th dport", port)
		}
	}
	p = append(p, r.Verdict)
	return strings.Join(p, " ")
}

// dir is one direction of a policy.
type dir struct {
	name    string // "in" or "eg"
	peer    string // which address is the peer's: "saddr" or "daddr"
	verdict string // what an allowing rule does
}

var (
	ingress = dir{"in", "saddr", acceptVerd}
	egress  = dir{"eg", "daddr", egressVerd}
)

// podInfo is a pod that has a pod-network IP.
type podInfo struct {
	pod *corev1.Pod
	ip  string
}

// Compile turns the cluster's policies into the ruleset of in.NodeName. It
// is a pure function: the same input gives the same ruleset.
func Compile(in Input) *Ruleset {
	rs := &Ruleset{Sets: map[string]*Set{}, Chains: map[string][]Rule{}, Ingress: map[string]string{}, Egress: map[string]string{}}
	nsLabels := map[string]labels.Set{}
	for _, ns := range in.Namespaces {
		nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	var pods []podInfo
	for _, p := range in.Pods {
		if ip := podIP(p); ip != "" {
			pods = append(pods, podInfo{p, ip})
		}
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].ip < pods[j].ip })
	pols := slices.Clone(in.Policies)
	sort.Slice(pols, func(i, j int) bool {
		if pols[i].Namespace != pols[j].Namespace {
			return pols[i].Namespace < pols[j].Namespace
		}
		return pols[i].Name < pols[j].Name
	})

	c := compiler{rs: rs, pods: pods, nsLabels: nsLabels}
	// Which policies select each local pod, per direction.
	inOf, egOf := map[string][]int{}, map[string][]int{}
	for i, pol := range pols {
		sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
		if err != nil {
			continue // the apiserver validates selectors; skip what cannot parse
		}
		hasIn, hasEg := policyTypes(pol)
		for _, p := range pods {
			if p.pod.Namespace != pol.Namespace || p.pod.Spec.NodeName != in.NodeName || !sel.Matches(labels.Set(p.pod.Labels)) {
				continue
			}
			if hasIn {
				inOf[p.ip] = append(inOf[p.ip], i)
			}
			if hasEg {
				egOf[p.ip] = append(egOf[p.ip], i)
			}
		}
	}
	used := map[string]bool{}
	groups := map[string]string{}
	assign := func(d dir, of map[string][]int, to map[string]string) {
		ips := make([]string, 0, len(of))
		for ip := range of {
			ips = append(ips, ip)
		}
		sort.Strings(ips)
		for _, ip := range ips {
			key := d.name + fmt.Sprint(of[ip])
			g, ok := groups[key]
			if !ok {
				g = fmt.Sprintf("np-g%d-%s", len(groups), d.name)
				groups[key] = g
				var rules []Rule
				for _, i := range of[ip] {
					pc := policyChain(i, d)
					if !used[pc] {
						used[pc] = true
						c.policy(pols[i], i, d)
					}
					rules = append(rules, Rule{Jump: pc})
				}
				rs.Chains[g] = append(rules, Rule{Verdict: "drop"})
			}
			to[ip] = g
		}
	}
	assign(ingress, inOf, rs.Ingress)
	assign(egress, egOf, rs.Egress)
	return rs
}

func policyChain(i int, d dir) string { return fmt.Sprintf("np-p%d-%s", i, d.name) }

// policyTypes says which directions pol isolates: its policyTypes, or when
// empty, Ingress always and Egress when it has egress rules.
func policyTypes(pol *networkingv1.NetworkPolicy) (in, eg bool) {
	if len(pol.Spec.PolicyTypes) == 0 {
		return true, len(pol.Spec.Egress) > 0
	}
	for _, t := range pol.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			eg = true
		}
	}
	return in, eg
}

// podIP is the pod's IPv4 address on the pod network, "" for host-network
// pods, pods without an address yet and finished pods (their address may
// already be another pod's).
func podIP(p *corev1.Pod) string {
	if p.Spec.HostNetwork || p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return ""
	}
	ip := net.ParseIP(p.Status.PodIP)
	if ip == nil || ip.To4() == nil {
		return ""
	}
	return ip.To4().String()
}

type compiler struct {
	rs       *Ruleset
	pods     []podInfo
	nsLabels map[string]labels.Set
}

// policy adds the chain of policy i in direction d: one rule per peer and
// port of each of its rules, each ending in d's allowing verdict. A policy
// without rules in d allows nothing (the group chain's drop decides).
func (c *compiler) policy(pol *networkingv1.NetworkPolicy, i int, d dir) {
	type ruleSpec struct {
		peers []networkingv1.NetworkPolicyPeer
		ports []networkingv1.NetworkPolicyPort
	}
	var specs []ruleSpec
	if d == ingress {
		for _, r := range pol.Spec.Ingress {
			specs = append(specs, ruleSpec{r.From, r.Ports})
		}
	} else {
		for _, r := range pol.Spec.Egress {
			specs = append(specs, ruleSpec{r.To, r.Ports})
		}
	}
	chain := policyChain(i, d)
	var rules []Rule
	for r, spec := range specs {
		base := fmt.Sprintf("%s%d", chain, r)
		// Peers: one set for all selector peers, one match per ipBlock.
		var peers []Rule
		var peerPods []podInfo // the selector peers' pods, for named ports
		if len(spec.peers) > 0 {
			seen := map[string]bool{}
			hasSel := false
			for _, peer := range spec.peers {
				if peer.IPBlock != nil {
					// IPv6 blocks cannot match in an IPv4 table (and would
					// fail the whole transaction).
					cidr := ipv4CIDR(peer.IPBlock.CIDR)
					if cidr == "" {
						continue
					}
					var except []string
					for _, e := range peer.IPBlock.Except {
						if e := ipv4CIDR(e); e != "" {
							except = append(except, e)
						}
					}
					sort.Strings(except)
					peers = append(peers, Rule{SrcDst: d.peer, CIDR: cidr, Except: except})
					continue
				}
				hasSel = true
				for _, p := range c.match(pol.Namespace, peer) {
					if !seen[p.ip] {
						seen[p.ip] = true
						peerPods = append(peerPods, p)
					}
				}
			}
			if hasSel {
				set := &Set{Type: ipSetType}
				for _, p := range peerPods {
					set.Elements = append(set.Elements, []string{p.ip})
				}
				c.rs.Sets[base] = set
				peers = append([]Rule{{SrcDst: d.peer, PeerSet: base}}, peers...)
			}
			if len(peers) == 0 {
				continue // only peers that cannot match: allows nothing
			}
		} else {
			peers = []Rule{{}}
			peerPods = nil
		}
		// Ports: named ports resolve against the destination pods: the
		// selected pods for ingress, the peers (any pod when the rule
		// names none) for egress.
		var ports []Rule
		if len(spec.ports) == 0 {
			ports = []Rule{{}}
		}
		for k, port := range spec.ports {
			proto := "tcp"
			if port.Protocol != nil {
				proto = strings.ToLower(string(*port.Protocol))
			}
			switch {
			case port.Port == nil:
				ports = append(ports, Rule{Proto: proto})
			case port.Port.StrVal == "" && port.Port.IntVal != 0:
				pr := Rule{Proto: proto, Port: port.Port.IntVal}
				if port.EndPort != nil {
					pr.EndPort = *port.EndPort
				}
				ports = append(ports, pr)
			default:
				name := fmt.Sprintf("%s-n%d", base, k)
				dst := c.pods
				if d == ingress {
					dst = c.selected(pol)
				} else if len(peerPods) > 0 && !hasIPBlock(spec.peers) {
					dst = peerPods
				}
				c.rs.Sets[name] = namedPorts(dst, port.Port.StrVal, proto)
				ports = append(ports, Rule{NamedSet: name})
			}
		}
		for _, pe := range peers {
			for _, po := range ports {
				r := po
				r.SrcDst, r.PeerSet, r.CIDR, r.Except = pe.SrcDst, pe.PeerSet, pe.CIDR, pe.Except
				r.Verdict = d.verdict
				rules = append(rules, r)
			}
		}
	}
	c.rs.Chains[chain] = rules
}

// ipv4CIDR is cidr in canonical form (host bits cleared), "" when it is
// not an IPv4 CIDR.
func ipv4CIDR(cidr string) string {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil || n.IP.To4() == nil {
		return ""
	}
	return n.String()
}

func hasIPBlock(peers []networkingv1.NetworkPolicyPeer) bool {
	return slices.ContainsFunc(peers, func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock != nil })
}

// match returns the pods a selector peer of a policy in namespace ns
// selects: a podSelector alone selects in ns, a namespaceSelector alone
// every pod of the matching namespaces, both the matching pods there.
func (c *compiler) match(ns string, peer networkingv1.NetworkPolicyPeer) []podInfo {
	podSel, nsSel := labels.Everything(), labels.Selector(nil)
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			return nil
		}
		podSel = s
	}
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			return nil
		}
		nsSel = s
	}
	var out []podInfo
	for _, p := range c.pods {
		if nsSel == nil {
			if p.pod.Namespace != ns {
				continue
			}
		} else if l, ok := c.nsLabels[p.pod.Namespace]; !ok || !nsSel.Matches(l) {
			continue
		}
		if podSel.Matches(labels.Set(p.pod.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// selected returns the pods pol selects (any box).
func (c *compiler) selected(pol *networkingv1.NetworkPolicy) []podInfo {
	ps := metav1.LabelSelector(pol.Spec.PodSelector)
	return c.match(pol.Namespace, networkingv1.NetworkPolicyPeer{PodSelector: &ps})
}

// namedPorts is the set of (pod IP, protocol, port) for the pods with a
// container port called name of protocol proto.
func namedPorts(pods []podInfo, name, proto string) *Set {
	set := &Set{Type: portSetType}
	for _, p := range pods {
		seen := map[int32]bool{}
		for _, ctr := range slices.Concat(p.pod.Spec.InitContainers, p.pod.Spec.Containers) {
			for _, cp := range ctr.Ports {
				cpProto := "tcp"
				if cp.Protocol != "" {
					cpProto = strings.ToLower(string(cp.Protocol))
				}
				if cp.Name == name && cpProto == proto && !seen[cp.ContainerPort] {
					seen[cp.ContainerPort] = true
					set.Elements = append(set.Elements, []string{p.ip, proto, strconv.Itoa(int(cp.ContainerPort))})
				}
			}
		}
	}
	return set
}
