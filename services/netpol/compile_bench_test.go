package netpol

import (
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// bigInput: 300 pods in 10 namespaces (100 on this box), 100 policies each
// selecting one app with pod, namespace and ipBlock peers and a named port.
func bigInput() Input {
	in := Input{NodeName: here}
	for i := 0; i < 10; i++ {
		in.Namespaces = append(in.Namespaces, ns(fmt.Sprintf("ns%d", i), map[string]string{"group": fmt.Sprint(i % 5)}))
	}
	for i := 0; i < 300; i++ {
		node := "other"
		if i%3 == 0 {
			node = here // 100 pods on this box
		}
		in.Pods = append(in.Pods, pod(fmt.Sprintf("ns%d", i%10), fmt.Sprintf("p%d", i), fmt.Sprintf("10.42.%d.%d", i/250, i%250+1), node,
			map[string]string{"app": fmt.Sprintf("app%d", i%10)}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
	}
	for i := 0; i < 100; i++ {
		http := intstr.FromString("http")
		in.Policies = append(in.Policies, policy(fmt.Sprintf("ns%d", i%10), fmt.Sprintf("pol%d", i), sel("app", fmt.Sprintf("app%d", i%10)), func(s *networkingv1.NetworkPolicySpec) {
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: sel("group", fmt.Sprint(i%5)), PodSelector: sel("app", fmt.Sprintf("app%d", (i+1)%10))},
					{NamespaceSelector: sel("group", fmt.Sprint((i+1)%5))},
					{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("192.0.%d.0/24", i), Except: []string{fmt.Sprintf("192.0.%d.0/28", i)}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &http}, tcp(9000 + i)},
			}}
		}))
	}
	return in
}

// BenchmarkCompileRender: compile and render the ruleset of bigInput.
// KUBOX_NETPOL_DUMP=file writes the transaction (for timing nft -f by hand).
func BenchmarkCompileRender(b *testing.B) {
	in := bigInput()
	var tx *knftables.Transaction
	for i := 0; i < b.N; i++ {
		tx = knftables.NewFake(knftables.IPv4Family, Table).NewTransaction()
		Render(tx, Compile(in), Existing{})
	}
	b.ReportMetric(float64(tx.NumOperations()), "nft-ops")
	if f := os.Getenv("KUBOX_NETPOL_DUMP"); f != "" {
		if err := os.WriteFile(f, []byte(tx.String()), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}
