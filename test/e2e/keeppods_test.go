package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const keptPod = `apiVersion: v1
kind: Pod
metadata: {name: kept}
spec:
  containers:
  - name: web
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
`

// TestRestartKeepsPods is what the systemd unit relies on (it runs the
// server with --stop-pods-on-exit=false and KillMode=process): a kubox that
// stops leaves the pods' containers running, and the next kubox adopts
// them: same container, no restart, still served.
func TestRestartKeepsPods(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env, "--stop-pods-on-exit=false")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n.Start()
	if err := n.WaitNodeReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(n.Root, "kept.yaml")
	if err := os.WriteFile(manifest, []byte(keptPod), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		out, err := n.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.phase}")
		return err == nil && out == "Running"
	}
	if err := harness.WaitFor(ctx, 500*time.Millisecond, running); err != nil {
		t.Fatalf("pod not Running: %v", err)
	}
	cid, err := n.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	if err != nil {
		t.Fatal(err)
	}
	pid, start := containerProcess(ctx, t, n, strings.TrimPrefix(cid, "containerd://"))

	took, err := n.Stop(30 * time.Second)
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("kubox stopped %s after SIGTERM, pods kept", took.Round(time.Millisecond))
	if got := processStart(pid); got != start {
		t.Fatalf("the pod's container (pid %d) did not outlive kubox", pid)
	}
	// Its rootfs is still mounted: kubox leaves a kept pod's mounts alone.
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(mi), strings.TrimPrefix(cid, "containerd://")) {
		t.Errorf("the kept container's mounts are gone")
	}

	n.Start()
	if err := n.WaitNodeReady(ctx); err != nil {
		t.Fatal(err)
	}
	// A few kubelet sync loops: anything it disliked would show by now.
	time.Sleep(20 * time.Second)
	if !running() {
		t.Fatal("pod not Running after kubox came back")
	}
	if got, _ := n.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].containerID}"); got != cid {
		t.Errorf("container %s replaced by %s", cid, got)
	}
	if got, _ := n.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); got != "0" {
		t.Errorf("restartCount %s, want 0", got)
	}
	if got := processStart(pid); got != start {
		t.Errorf("the adopted container (pid %d) is gone", pid)
	}
	// Adopted means managed: containerd knows the task, and exec works.
	if again, _ := containerProcess(ctx, t, n, strings.TrimPrefix(cid, "containerd://")); again != pid {
		t.Errorf("containerd reports pid %d for the container, want %d", again, pid)
	}
	if out, err := n.Kubectl(ctx, "exec", "kept", "--", "cat", "/www/index.html"); err != nil || !strings.Contains(out, "kubox-test ok") {
		t.Errorf("kubectl exec into the adopted container: %q %v", out, err)
	}
}

// containerProcess asks kubox's containerd for the task's pid, and reads
// the process's start time so a reused pid is not mistaken for it.
func containerProcess(ctx context.Context, t *testing.T, n *harness.Node, id string) (int, string) {
	t.Helper()
	out, err := n.Kubox(ctx, "ctr", "--address", filepath.Join(n.RunDir, "containerd", "containerd.sock"), "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("tasks ls: %q", line)
			}
			return pid, processStart(pid)
		}
	}
	t.Fatalf("container %s not in tasks ls:\n%s", id, out)
	return 0, ""
}

// processStart is field 22 of /proc/PID/stat (start time in clock ticks),
// or "" when the process is gone.
func processStart(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}
