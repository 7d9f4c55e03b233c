package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// podNetPods: a web server on box2 serving a file of podNetMiB MiB, and a
// client on box1.
const podNetPods = `apiVersion: v1
kind: Pod
metadata: {name: sink, namespace: default}
spec:
  nodeName: box2
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
metadata: {name: source, namespace: default}
spec:
  nodeName: box1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
`

const (
	podNetMiB   = 256
	podNetFetch = 4 // fetches of the file per measurement
)

// BenchmarkPodNetwork measures pod-to-pod TCP throughput (one stream,
// podNetMiB MiB) and ping round-trip time between pods on two boxes that
// share a subnet, once over host routes (pod-network-backend host-gw) and
// once over the VXLAN overlay (pod-network-backend vxlan).
func BenchmarkPodNetwork(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		for _, backend := range []string{"host-gw", "vxlan"} {
			podNetRun(b, env, backend)
		}
	}
}

func podNetRun(b *testing.B, env harness.Env, backend string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	network := harness.NewNetwork(b, "kbx"+strings.ReplaceAll(backend, "-", ""), 2)
	ns, ip := network.Namespaces, network.IPs
	boxes := make([]*harness.Node, 2)
	for j := range boxes {
		name := fmt.Sprintf("box%d", j+1)
		boxes[j] = harness.NewNode(b, env, "--node-name", name, "--node-ip", ip[j],
			"--kubelet-cgroup-root=/"+harness.CgroupRootPrefix+name, "--pod-network-backend", backend)
		boxes[j].Netns = ns[j]
	}
	box1, box2 := boxes[0], boxes[1]
	// Ends both servers before any host cleanup removes pod cgroups, and
	// before the next run's network (same names) is made.
	defer func() {
		box2.Kill()
		box1.Kill()
	}()
	box1.Start()
	if err := box1.WaitNodeReady(ctx); err != nil {
		b.Fatal(err)
	}
	out, err := box1.Kubox(ctx, "token", "create", "--data-dir", box1.DataDir)
	if err != nil {
		b.Fatal(err)
	}
	box2.Args = append(box2.Args, "--join", "https://"+net.JoinHostPort(ip[0], "6443"))
	box2.Env = []string{"KUBOX_TOKEN=" + strings.TrimSpace(out)}
	box2.Start()
	if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
		out, err := box1.Kubectl(ctx, "get", "node", "box2", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True"
	}); err != nil {
		b.Fatal(err)
	}
	for _, n := range boxes {
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			b.Fatal(err)
		}
	}
	mf := filepath.Join(box1.Root, "pods.yaml")
	if err := os.WriteFile(mf, []byte(fmt.Sprintf(podNetPods, podNetMiB*16)), 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := box1.Kubectl(ctx, "apply", "-f", mf); err != nil {
		b.Fatal(err)
	}
	if _, err := box1.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/sink", "pod/source", "--timeout=120s"); err != nil {
		b.Fatal(err)
	}
	sinkIP, err := box1.Kubectl(ctx, "get", "pod", "sink", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		b.Fatal(err)
	}
	// busybox's wget crashes (static glibc): HTTP over nc, podNetFetch
	// times one after the other, timed inside the pod.
	out, err = box1.Kubectl(ctx, "exec", "source", "--", "sh", "-c",
		fmt.Sprintf(`busybox time sh -c 'for i in $(busybox seq %d); do printf "GET /big HTTP/1.0\r\n\r\n" | nc %s 8080; done | busybox wc -c' 2>&1`, podNetFetch, sinkIP))
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
	if bytes < podNetFetch*podNetMiB<<20 || secs <= 0 {
		b.Fatalf("transfer: %d bytes in %.2fs, want %d MiB: %q", bytes, secs, podNetFetch*podNetMiB, out)
	}
	report(b, fmt.Sprintf("pod-to-pod TCP throughput, %s", backend), float64(bytes)*8/secs/1e9, "Gbit/s")
	out, err = box1.Kubectl(ctx, "exec", "source", "--", "ping", "-c", "20", "-i", "0.1", "-q", sinkIP)
	if err != nil {
		b.Fatal(err)
	}
	m = regexp.MustCompile(`min/avg/max = [\d.]+/([\d.]+)/`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("ping output: %q", out)
	}
	rtt, _ := strconv.ParseFloat(m[1], 64)
	report(b, fmt.Sprintf("pod-to-pod ping RTT avg, %s", backend), rtt, "ms")
}
