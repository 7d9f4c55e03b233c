package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const cpuPods = `apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sleep, "100000"]
    resources:
      requests: {cpu: "1", memory: 32Mi}
      limits: {cpu: "1", memory: 32Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: shared, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sleep, "100000"]
`

// cpusAllowed is the Cpus_allowed_list of pod's container, read inside it.
func cpusAllowed(ctx context.Context, t *testing.T, n *harness.Node, pod string) string {
	t.Helper()
	out, err := n.Kubectl(ctx, "exec", pod, "--", "grep", "Cpus_allowed_list", "/proc/self/status")
	if err != nil {
		t.Fatalf("exec in %s: %v", pod, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Cpus_allowed_list:"))
}

// waitPodsRunning waits until both pods run a container started at or
// after since.
func waitPodsRunning(ctx context.Context, t *testing.T, n *harness.Node, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		out, err := n.Kubectl(ctx, "get", "pods", "pinned", "shared", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}`)
		last = out
		if err == nil {
			ok := 0
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 3 && f[1] == "Running" {
					if at, err := time.Parse(time.RFC3339, f[2]); err == nil && !at.Before(since) {
						ok++
					}
				}
			}
			if ok == 2 {
				return
			}
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	desc, _ := n.Kubectl(ctx, "describe", "pods")
	t.Fatalf("pods not Running since %s; last:\n%s\n%s", since.Format(time.TimeOnly), last, desc)
}

// TestCPUManager: with cpu-manager-policy static and reserved-cpus 0 on
// this 2-CPU machine, a Guaranteed pod with cpu 1 gets CPU 1 to itself and
// a BestEffort pod runs on CPU 0; switching to none and back to static
// between restarts works every time (the old state file is moved aside).
func TestCPUManager(t *testing.T) {
	env := harness.Require(t)
	static := []string{"--cpu-manager-policy", "static", "--reserved-cpus", "0"}
	n := harness.NewNode(t, env, static...)
	base := slices.Clone(n.Args[:len(n.Args)-len(static)])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	start := func(args []string) time.Time {
		t.Helper()
		n.Args = append(slices.Clone(base), args...)
		since := time.Now().Truncate(time.Second)
		n.Start()
		waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
		defer waitCancel()
		if err := n.WaitNodeReady(waitCtx); err != nil {
			t.Fatal(err)
		}
		return since
	}
	stop := func() {
		t.Helper()
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}

	since := start(static)
	if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
		t.Fatal(err)
	}
	applyYAML(ctx, t, n, "cpu-pods.yaml", cpuPods)
	waitPodsRunning(ctx, t, n, since)
	if got := cpusAllowed(ctx, t, n, "pinned"); got != "1" {
		t.Errorf("static: Guaranteed pod Cpus_allowed_list %q, want 1", got)
	}
	if got := cpusAllowed(ctx, t, n, "shared"); got != "0" {
		t.Errorf("static: BestEffort pod Cpus_allowed_list %q, want 0", got)
	}
	state := filepath.Join(n.DataDir, "kubelet", "cpu_manager_state")
	if data, err := os.ReadFile(state); err != nil || !strings.Contains(string(data), `"policyName":"static"`) {
		t.Fatalf("cpu_manager_state: %q %v", data, err)
	}
	stop()

	// none: kubox moves the static state aside and starts; pods run on all CPUs.
	since = start([]string{"--cpu-manager-policy", "none"})
	waitPodsRunning(ctx, t, n, since)
	if got := cpusAllowed(ctx, t, n, "pinned"); got != "0-1" {
		t.Errorf("none: Guaranteed pod Cpus_allowed_list %q, want 0-1", got)
	}
	if log, _ := os.ReadFile(n.LogPath); !strings.Contains(string(log), "CPU manager policy changed: moved the old CPU manager state aside") {
		t.Error("no log line about the moved CPU manager state")
	}
	old, _ := filepath.Glob(state + ".old-*")
	if len(old) != 1 {
		t.Errorf("moved-aside state files: %v", old)
	}
	stop()

	// static again.
	since = start(static)
	waitPodsRunning(ctx, t, n, since)
	if got := cpusAllowed(ctx, t, n, "pinned"); got != "1" {
		t.Errorf("static again: Guaranteed pod Cpus_allowed_list %q, want 1", got)
	}
	if got := cpusAllowed(ctx, t, n, "shared"); got != "0" {
		t.Errorf("static again: BestEffort pod Cpus_allowed_list %q, want 0", got)
	}
	stop()
}
