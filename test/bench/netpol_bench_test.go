package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/test/harness"
)

const (
	npPolicies   = 100
	npGhostPods  = 300 // Pod objects with addresses, on a node that runs nothing
	npChanges    = 10  // policy changes timed
	npMiB        = 256 // throughput: file size, fetched npFetch times
	npFetch      = 3
	npGhostNode  = "ghost"
	npBenchLabel = "np-bench"
)

// npPods: a web server (sink) and a client (source) on the box.
const npPods = `apiVersion: v1
kind: Pod
metadata: {name: sink, namespace: default, labels: {np-bench: "sink"}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /tmp/www && busybox dd if=/dev/zero of=/tmp/www/big bs=65536 count=%d 2>/dev/null && exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: source, namespace: default, labels: {np-bench: "source"}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
`

// BenchmarkNetworkPolicy measures, on one box with npPolicies policies and
// npGhostPods pods' addresses in their sets: how long after a policy is
// created (or deleted) the box's rules hold it (API write to the pod's
// entry in the kernel's verdict map, the median of npChanges), and the
// TCP throughput between two pods with the policies selecting the server
// against none (ratio).
func BenchmarkNetworkPolicy(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		npRun(b, env)
	}
}

func npRun(b *testing.B, env harness.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := harness.NewNode(b, env, "--node-name", "np1")
	defer n.Kill()
	n.Start()
	if err := n.WaitNodeReady(ctx); err != nil {
		b.Fatal(err)
	}
	if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
		b.Fatal(err)
	}
	mf := filepath.Join(n.Root, "np-pods.yaml")
	if err := os.WriteFile(mf, []byte(fmt.Sprintf(npPods, npMiB*16)), 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", mf); err != nil {
		b.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/sink", "pod/source", "--timeout=120s"); err != nil {
		b.Fatal(err)
	}
	sinkIP, err := n.Kubectl(ctx, "get", "pod", "sink", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		b.Fatal(err)
	}
	none := npThroughput(ctx, b, n, sinkIP)

	c := npClient(b, n)
	npGhosts(ctx, b, c)
	for i := 0; i < npPolicies; i++ {
		if _, err := c.NetworkingV1().NetworkPolicies("default").Create(ctx, npPolicy(i), metav1.CreateOptions{}); err != nil {
			b.Fatalf("create policy %d: %v", i, err)
		}
	}
	// The policies select the sink; the last one lets the source in.
	npWaitMap(ctx, b, sinkIP, true)
	with := npThroughput(ctx, b, n, sinkIP)

	// Changes: a deny policy for the source pod (egress) appears and goes.
	srcIP, err := n.Kubectl(ctx, "get", "pod", "source", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for i := 0; i < npChanges; i++ {
		deny := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "np-change"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{npBenchLabel: "source"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			},
		}
		begin := time.Now()
		if _, err := c.NetworkingV1().NetworkPolicies("default").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		npWaitEgress(ctx, b, srcIP, true)
		took = append(took, time.Since(begin))
		begin = time.Now()
		if err := c.NetworkingV1().NetworkPolicies("default").Delete(ctx, "np-change", metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		npWaitEgress(ctx, b, srcIP, false)
		took = append(took, time.Since(begin))
	}
	slices.Sort(took)
	report(b, fmt.Sprintf("netpol enforce change, %d policies %d pods, median", npPolicies, npGhostPods+2), float64(took[len(took)/2].Microseconds())/1000, "ms")
	report(b, fmt.Sprintf("netpol enforce change, %d policies %d pods, max", npPolicies, npGhostPods+2), float64(took[len(took)-1].Microseconds())/1000, "ms")
	if out, err := exec.Command("sh", "-c", "nft list table ip kubox | wc -l").Output(); err == nil {
		report(b, "netpol rules, lines of kubox's table", float64(atoiOr(strings.TrimSpace(string(out)))), "lines")
	}
	report(b, "pod-to-pod TCP throughput, no policy", none, "Gbit/s")
	report(b, fmt.Sprintf("pod-to-pod TCP throughput, %d policies", npPolicies), with, "Gbit/s")
	report(b, fmt.Sprintf("pod-to-pod TCP throughput ratio, %d policies / none", npPolicies), with/none, "x")
}

func atoiOr(s string) int { v, _ := strconv.Atoi(s); return v }

func npClient(b *testing.B, n *harness.Node) kubernetes.Interface {
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	rc.QPS, rc.Burst = 1000, 1000
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// npGhosts makes npGhostPods pods with addresses on a Node that runs
// nothing, spread over 10 namespaces and 10 app labels, so the policies'
// sets hold that many addresses without that many containers.
func npGhosts(ctx context.Context, b *testing.B, c kubernetes.Interface) {
	if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: npGhostNode}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np-%d", i), Labels: map[string]string{"group": strconv.Itoa(i % 5)}}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < npGhostPods; i++ {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ghost-%d", i), Namespace: fmt.Sprintf("np-%d", i%10),
				Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%10)}},
			Spec: corev1.PodSpec{NodeName: npGhostNode, Containers: []corev1.Container{{Name: "c", Image: "localhost/kubox-test/busybox:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		}
		created, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.99.%d.%d", i/250, i%250+1)}
		if _, err := c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// npPolicy i selects the sink and allows ingress from a mix of peers: pods
// by label in some namespaces, whole namespaces, an ipBlock, named and
// numbered ports. Policy 99 also lets the source in.
func npPolicy(i int) *networkingv1.NetworkPolicy {
	http := intstr.FromString("http")
	port := intstr.FromInt32(int32(9000 + i))
	rule := networkingv1.NetworkPolicyIngressRule{
		From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": strconv.Itoa(i % 5)}},
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%10)}}},
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": strconv.Itoa((i + 1) % 5)}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("192.0.%d.0/24", i%256), Except: []string{fmt.Sprintf("192.0.%d.0/28", i%256)}}},
		},
		Ports: []networkingv1.NetworkPolicyPort{{Port: &http}, {Port: &port}},
	}
	pol := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np-%d", i)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{npBenchLabel: "sink"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{rule},
		},
	}
	if i == npPolicies-1 {
		pol.Spec.Ingress = append(pol.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{npBenchLabel: "source"}}}},
		})
	}
	return pol
}

// npWaitMap waits until the ingress verdict map holds ip (present) or not.
func npWaitMap(ctx context.Context, b *testing.B, ip string, present bool) {
	npWait(ctx, b, "np-in-pods", ip, present)
}

func npWaitEgress(ctx context.Context, b *testing.B, ip string, present bool) {
	npWait(ctx, b, "np-eg-pods", ip, present)
}

// npWait polls the kernel's verdict map every 5 ms.
func npWait(ctx context.Context, b *testing.B, m, ip string, present bool) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.CommandContext(ctx, "nft", "list", "map", "ip", "kubox", m).Output()
		if strings.Contains(string(out), ip+" : ") == present {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("map %s: %s present=%v not reached within 30s:\n%s", m, ip, present, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// npThroughput fetches the sink's file npFetch times from the source and
// returns Gbit/s, timed inside the pod.
func npThroughput(ctx context.Context, b *testing.B, n *harness.Node, sinkIP string) float64 {
	out, err := n.Kubectl(ctx, "exec", "source", "--", "sh", "-c",
		fmt.Sprintf(`busybox time sh -c 'for i in $(busybox seq %d); do printf "GET /big HTTP/1.0\r\n\r\n" | nc %s 8080; done | busybox wc -c' 2>&1`, npFetch, sinkIP))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)^\s*(\d+)\s.*real\s+(\d+)m\s*([\d.]+)s`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("transfer output: %q", out)
	}
	bytes, _ := strconv.Atoi(m[1])
	mins, _ := strconv.Atoi(m[2])
	secs, _ := strconv.ParseFloat(m[3], 64)
	secs += float64(mins) * 60
	if bytes < npFetch*npMiB<<20 || secs <= 0 {
		b.Fatalf("transfer: %d bytes in %.2fs, want %d MiB: %q", bytes, secs, npFetch*npMiB, out)
	}
	return float64(bytes) * 8 / secs / 1e9
}
