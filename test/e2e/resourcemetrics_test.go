package e2e

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// burner is a Deployment whose pods burn CPU (a shell loop, capped by its
// limit at 3x its request) while /tmp/burn exists in them, and an HPA
// (1..3 replicas, 50% CPU) on it that scales down 10 s after the load
// goes, instead of upstream's 5 min.
const burner = `apiVersion: apps/v1
kind: Deployment
metadata: {name: burner, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: burner}}
  template:
    metadata: {labels: {app: burner}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "while :; do if [ -e /tmp/burn ]; then :; else sleep 1; fi; done"]
        resources: {requests: {cpu: 100m, memory: 8Mi}, limits: {cpu: 300m}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burner, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burner}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 10
`

// TestResourceMetricsAPI: with no image to pull, `kubectl top nodes` and
// `kubectl top pods -A` show figures within 90 s of the node being Ready,
// the APIService is kubox's local one and Available, and an HPA on CPU
// scales a Deployment whose pod burns CPU to at least 2 replicas and back
// to 1 when the burning stops. Restarted with --disable-metrics-api, the
// box removes the APIService and kubectl top says the API is not there.
func TestResourceMetricsAPI(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--node-name", "rm1")

	var ready time.Time
	harness.Phase(t, "node-ready", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		ready = time.Now()
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "top", func(t *testing.T) {
		// NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%), with figures.
		nodeLine := regexp.MustCompile(`(?m)^rm1\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%\s*$`)
		waitFor(t, "kubectl top nodes with figures", func() (bool, string) {
			out, err := n.Kubectl(ctx, "top", "nodes")
			return err == nil && nodeLine.MatchString(out), fmt.Sprint(out, err)
		})
		t.Logf("kubectl top nodes has figures %s after the node was Ready", time.Since(ready).Round(time.Second))
		// kube-system has no pods of kubox's own: run one to measure.
		apply(ctx, t, n, "burner.yaml", burner)
		podLine := regexp.MustCompile(`(?m)^default\s+burner-\S+\s+\d+m\s+\d+Mi\s*$`)
		waitFor(t, "kubectl top pods -A with the burner pod", func() (bool, string) {
			out, err := n.Kubectl(ctx, "top", "pods", "-A")
			return err == nil && podLine.MatchString(out), fmt.Sprint(out, err)
		})
		svc := kubectlOut(ctx, t, n, "get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
			`jsonpath={.spec.service}|{.status.conditions[?(@.type=="Available")].status}|{.metadata.labels.app\.kubernetes\.io/managed-by}`)
		if svc != "|True|kubox" {
			t.Errorf("APIService v1beta1.metrics.k8s.io: %q, want local (no service), Available, managed by kubox", svc)
		}
		// The group is authorized like any other: a user without RBAC on it is refused.
		if out, err := n.Kubectl(ctx, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", "--as", "nobody"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("an unauthorized user read node metrics: %s %v", out, err)
		}
	})

	harness.Phase(t, "hpa", func(t *testing.T) {
		pod := kubectlOut(ctx, t, n, "get", "pods", "-l", "app=burner", "-o", "jsonpath={.items[0].metadata.name}")
		kubectl(ctx, t, n, "exec", pod, "--", "touch", "/tmp/burn")
		begin := time.Now()
		waitReplicas(ctx, t, n, "at least 2", func(r int) bool { return r >= 2 })
		t.Logf("HPA scaled up to >= 2 replicas %s after the burn began", time.Since(begin).Round(time.Second))
		kubectl(ctx, t, n, "exec", pod, "--", "rm", "/tmp/burn")
		begin = time.Now()
		waitReplicas(ctx, t, n, "1", func(r int) bool { return r == 1 })
		t.Logf("HPA scaled back to 1 replica %s after the burn stopped", time.Since(begin).Round(time.Second))
	})

	harness.Phase(t, "off", func(t *testing.T) {
		if _, err := n.Stop(time.Minute); err != nil {
			t.Fatal(err)
		}
		n.Args = append(n.Args, "--disable-metrics-api")
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the APIService removed", func() (bool, string) {
			out, err := n.Kubectl(ctx, "get", "apiservice", "v1beta1.metrics.k8s.io")
			return err != nil && strings.Contains(err.Error(), "NotFound"), fmt.Sprint(out, err)
		})
		if out, err := n.Kubectl(ctx, "top", "nodes"); err == nil || !strings.Contains(err.Error(), "Metrics API not available") {
			t.Errorf("kubectl top nodes with the metrics API off: %s %v", out, err)
		}
	})
}

// waitReplicas waits up to 4 min (the HPA reads every 15 s, the metrics
// move every 15 s, scale-down waits its window) for the burner
// Deployment's spec.replicas to satisfy ok.
func waitReplicas(ctx context.Context, t *testing.T, n *harness.Node, want string, ok func(int) bool) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		out, err := n.Kubectl(ctx, "get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}")
		var r int
		if _, serr := fmt.Sscan(out, &r); err == nil && serr == nil && ok(r) {
			return
		}
		last = fmt.Sprint(out, err)
	}
	hpa, _ := n.Kubectl(ctx, "describe", "hpa", "burner")
	top, _ := n.Kubectl(ctx, "top", "pods")
	t.Fatalf("burner replicas never %s; last %s\n%s\n%s", want, last, hpa, top)
}

// TestResourceMetricsTwoBoxes: every box scrapes every kubelet, so
// `kubectl top nodes` through either box's apiserver lists both boxes
// with figures.
func TestResourceMetricsTwoBoxes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxrm", 2)
	ns, ip := network.Namespaces, network.IPs
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")

	box1 := harness.NewNode(t, env, boxArgs("rmbox1", ip[0], cgroupRoot("rmbox1"))...)
	box1.Netns = ns[0]
	// Made here, not in the phase: a node's cleanup belongs to the test it is made in.
	box2 := harness.NewNode(t, env, boxArgs("rmbox2", ip[1], cgroupRoot("rmbox2"), "--join", joinURL)...)
	box2.Netns = ns[1]
	harness.Phase(t, "boxes-ready", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
		box2.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
		startBox(ctx, t, box2)
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := harness.WaitFor(wctx, time.Second, func() bool {
			out, err := box1.Kubectl(wctx, "get", "node", "rmbox2", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return err == nil && out == "True"
		}); err != nil {
			t.Fatalf("rmbox2 not Ready: %v", err)
		}
	})

	harness.Phase(t, "top-both", func(t *testing.T) {
		both := regexp.MustCompile(`(?ms)^rmbox1\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%\s*$.*^rmbox2\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%\s*$`)
		for _, b := range []*harness.Node{box1, box2} {
			waitFor(t, "kubectl top nodes with both boxes' figures", func() (bool, string) {
				out, err := b.Kubectl(ctx, "top", "nodes")
				return err == nil && both.MatchString(out), fmt.Sprint(out, err)
			})
		}
	})
}
