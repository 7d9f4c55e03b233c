package bench

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/test/harness"
)

const writeCount = 500

// BenchmarkJoin measures, on three "hosts" (network namespaces), how long
// a join takes to bring the new box's Node to Ready, and ConfigMap create
// latency (500 sequential creates through box 1) with one etcd member and
// with three voters, and through box 2, whose apiserver uses the etcd proxy.
func BenchmarkJoin(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		network := harness.NewNetwork(b, "kbxbench", 3)
		ns, ip := network.Namespaces, network.IPs
		boxes := make([]*harness.Node, 3)
		for j := range boxes {
			name := fmt.Sprintf("box%d", j+1)
			boxes[j] = harness.NewNode(b, env, "--node-name", name, "--node-ip", ip[j],
				"--kubelet-cgroup-root=/"+harness.CgroupRootPrefix+name)
			boxes[j].Netns = ns[j]
		}
		box1 := boxes[0]
		box1.Start()
		if err := box1.WaitNodeReady(ctx); err != nil {
			b.Fatal(err)
		}
		client := clientIn(b, box1)
		p50, p99 := createLatency(ctx, b, client, "one")
		report(b, "ConfigMap create p50, 1 etcd member", p50, "ms")
		report(b, "ConfigMap create p99, 1 etcd member", p99, "ms")

		// One token for both boxes.
		out, err := box1.Kubox(ctx, "token", "create", "--data-dir", box1.DataDir, "--reusable")
		if err != nil {
			b.Fatal(err)
		}
		tok := strings.TrimSpace(out)
		joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
		for j, box := range boxes[1:] {
			name := fmt.Sprintf("box%d", j+2)
			box.Args = append(box.Args, "--join", joinURL)
			box.Env = []string{"KUBOX_TOKEN=" + tok}
			begin := time.Now()
			box.Start()
			if err := harness.WaitFor(ctx, 100*time.Millisecond, func() bool {
				out, err := box1.Kubectl(ctx, "get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
				return err == nil && out == "True"
			}); err != nil {
				b.Fatal(err)
			}
			report(b, fmt.Sprintf("join of %s to its Node Ready", name), time.Since(begin).Seconds(), "s")
		}
		p50, p99 = createLatency(ctx, b, client, "three")
		report(b, "ConfigMap create p50, 3 etcd voters", p50, "ms")
		report(b, "ConfigMap create p99, 3 etcd voters", p99, "ms")
		// Box 2 joined, so its apiserver reaches etcd through the etcd
		// proxy (to its own member, a voter since box 3's join).
		p50, p99 = createLatency(ctx, b, clientIn(b, boxes[1]), "three-via-box2")
		report(b, "ConfigMap create p50, 3 etcd voters, through box2 (etcd proxy)", p50, "ms")
		report(b, "ConfigMap create p99, 3 etcd voters, through box2 (etcd proxy)", p99, "ms")
		cancel()
	}
}

// clientIn is a client-go client for n's apiserver, connecting from inside
// n's network namespace.
func clientIn(b *testing.B, n *harness.Node) kubernetes.Interface {
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	rc.Dial = harness.DialContext(b, n.Netns)
	rc.QPS, rc.Burst = 1000, 1000
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// createLatency creates writeCount ConfigMaps one after the other in a new
// namespace and returns the p50 and p99 latency in milliseconds.
func createLatency(ctx context.Context, b *testing.B, c kubernetes.Interface, ns string) (float64, float64) {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, writeCount)
	for i := 0; i < writeCount; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
		begin := time.Now()
		if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(begin))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100])
}
