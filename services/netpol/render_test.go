package netpol

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"
)

// everything is a ruleset using every kind of rule.
func everything() *Ruleset {
	end := int32(9000)
	rng := tcp(8000)
	rng.EndPort = &end
	return Compile(cluster(
		policy("a", "all", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
			s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: sel("app", "client")},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.0/29", "192.0.2.8/29"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{tcp(80), named("http"), rng, proto("SCTP", 7)},
			}}
			s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
		}),
		policy("b", "deny", &metav1.LabelSelector{}, nil),
	))
}

// The rendered transaction is one the real nft accepts, applied twice
// (the second replaces the first), in a network namespace of its own.
func TestRenderLoadsIntoNFT(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (nft in a new network namespace)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare")
	}
	rs := everything()
	first := knftables.NewFake(knftables.IPv4Family, Table).NewTransaction()
	Render(first, rs, Existing{})
	// What the first run left, as existing() would list it.
	old := Existing{Maps: []string{ingressMap, egressMap}, Chains: []string{forwardChain, inputChain, toChain}}
	for name := range rs.Chains {
		old.Chains = append(old.Chains, name)
	}
	for name := range rs.Sets {
		old.Sets = append(old.Sets, name)
	}
	second := knftables.NewFake(knftables.IPv4Family, Table).NewTransaction()
	Render(second, Compile(cluster()), old)
	script := "nft -f - <<'EOF'\n" + first.String() + "EOF\nnft -f - <<'EOF'\n" + second.String() + "EOF\nnft list table ip " + Table + "\n"
	cmd := exec.CommandContext(context.Background(), "unshare", "--net", "sh", "-e", "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft refused the rules: %v\n%s\n--- script:\n%s", err, out, script)
	}
	// The second (no policies) left the base chains and maps, no policy chain.
	if strings.Contains(string(out), "np-p0") || !strings.Contains(string(out), "chain np-forward") {
		t.Errorf("after the replace:\n%s", out)
	}
	// np-to is entered by goto from a jumped-to policy chain: without its
	// own accept, falling off its end returns to the group chain's drop.
	if !regexp.MustCompile(`chain np-to \{\s+ip daddr vmap @np-in-pods\s+accept\s+\}`).MatchString(string(out)) {
		t.Errorf("np-to must end in accept:\n%s", out)
	}
}
