package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// The Leases upstream's controller manager and scheduler use, which kubox
// campaigns for on every box.
var leaderLeases = []string{"kube-controller-manager", "kube-scheduler"}

// leaseHolder is the holderIdentity of kube-system/<name> as seen through n
// ("" when unheld or unreadable).
func leaseHolder(ctx context.Context, n *harness.Node, name string) string {
	out, err := n.Kubectl(ctx, "-n", "kube-system", "get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// holderBox is the box name in a lease identity ("box1_<uuid>" → "box1").
func holderBox(identity string) string {
	box, _, _ := strings.Cut(identity, "_")
	return box
}

// waitHolders waits up to timeout for every leader Lease, read through n,
// to be held by a box that ok accepts, and returns the boxes by lease.
func waitHolders(ctx context.Context, t *testing.T, n *harness.Node, timeout time.Duration, ok func(box string) bool) map[string]string {
	t.Helper()
	got := map[string]string{}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := harness.WaitFor(wctx, 250*time.Millisecond, func() bool {
		for _, l := range leaderLeases {
			got[l] = holderBox(leaseHolder(wctx, n, l))
			if !ok(got[l]) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("lease holders through %s after %s: %v", n.Netns, timeout, got)
	}
	return got
}

// logLines counts the lines of b's log that contain every one of words.
func logLines(t *testing.T, b *harness.Node, words ...string) int {
	t.Helper()
	return logLinesSince(t, b, 0, words...)
}

// containsAll tells whether line contains every one of words.
func containsAll(line string, words ...string) bool {
	for _, w := range words {
		if !strings.Contains(line, w) {
			return false
		}
	}
	return true
}

// stealLease makes kube-system/<name> look held by another identity,
// renewed now, for seconds.
func stealLease(ctx context.Context, t *testing.T, n *harness.Node, name string, seconds int) {
	t.Helper()
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
	patch := fmt.Sprintf(`{"spec":{"holderIdentity":"thief","leaseDurationSeconds":%d,"acquireTime":%q,"renewTime":%q}}`, seconds, now, now)
	if _, err := n.Kubectl(ctx, "-n", "kube-system", "patch", "lease", name, "--type", "merge", "-p", patch); err != nil {
		t.Fatal(err)
	}
}

const sleeperDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: default}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        command: ["sleep", "3600"]
        resources: {requests: {cpu: 10m, memory: 8Mi}}
`

func applyDeployment(ctx context.Context, t *testing.T, n *harness.Node, name string, replicas int) {
	t.Helper()
	mf := filepath.Join(n.Root, name+".yaml")
	if err := os.WriteFile(mf, []byte(fmt.Sprintf(sleeperDeployment, name, replicas)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", mf); err != nil {
		t.Fatal(err)
	}
}

type podState struct {
	Name, Node, Phase, Reason string
	Deleting                  bool
}

// appPods lists every pod of app, whatever its state.
func appPods(ctx context.Context, t *testing.T, n *harness.Node, app string) []podState {
	t.Helper()
	out, err := n.Kubectl(ctx, "get", "pods", "-l", "app="+app, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Spec   struct{ NodeName string } `json:"spec"`
			Status struct{ Phase, Reason string }
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var pods []podState
	for _, p := range list.Items {
		pods = append(pods, podState{p.Metadata.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Metadata.DeletionTimestamp != nil})
	}
	return pods
}

// waitRunning waits up to timeout for want Running pods of app.
func waitRunning(ctx context.Context, t *testing.T, n *harness.Node, app string, want int, timeout time.Duration) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var running int
	err := harness.WaitFor(wctx, time.Second, func() bool {
		running = 0
		for _, p := range appPods(ctx, t, n, app) {
			if p.Phase == "Running" && !p.Deleting {
				running++
			}
		}
		return running >= want
	})
	if err != nil {
		out, _ := n.Kubectl(ctx, "get", "pods", "-o", "wide", "-l", "app="+app)
		t.Fatalf("%s: %d of %d pods Running after %s\n%s", app, running, want, timeout, out)
	}
}

// assertExactlyPods checks, after a few seconds for any second creator to
// show itself, that app has exactly want pods, none being deleted, none
// rejected by a kubelet (Failed, OutOf*), and that its ReplicaSet deleted
// none: one active controller manager and one scheduler.
func assertExactlyPods(ctx context.Context, t *testing.T, n *harness.Node, app string, want int) []podState {
	t.Helper()
	time.Sleep(5 * time.Second)
	pods := appPods(ctx, t, n, app)
	if len(pods) != want {
		t.Errorf("%s: %d pods exist, want exactly %d", app, len(pods), want)
	}
	for _, p := range pods {
		if p.Deleting || p.Phase != "Running" || strings.HasPrefix(p.Reason, "OutOf") {
			t.Errorf("%s: pod %s on %s: phase %s reason %q deleting %v", app, p.Name, p.Node, p.Phase, p.Reason, p.Deleting)
		}
	}
	out, err := n.Kubectl(ctx, "get", "events", "-A", "-o", `jsonpath={range .items[*]}{.reason}/{.involvedObject.name}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Fields(out) {
		reason, obj, _ := strings.Cut(line, "/")
		if strings.HasPrefix(obj, app+"-") && (reason == "SuccessfulDelete" || strings.HasPrefix(reason, "OutOf")) {
			t.Errorf("%s: event %s on %s", app, reason, obj)
		}
	}
	return pods
}

// TestLeaderElection: every box campaigns for the controller manager's and
// the scheduler's Leases, one box works at a time, a box that loses a lease
// stops its controllers and campaigns again without exiting, and a SIGKILLed
// holder is replaced within 30 s.
//
// Box 1 starts alone; boxes 2 and 3 join. All three run kubelets, each
// under its own pod cgroup root.
func TestLeaderElection(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxle", 3)
	ns, ip := network.Namespaces, network.IPs

	box1 := harness.NewNode(t, env, boxArgs("box1", ip[0], cgroupRoot("box1"))...)
	box1.Netns = ns[0]
	box2 := harness.NewNode(t, env, boxArgs("box2", ip[1], cgroupRoot("box2"))...)
	box2.Netns = ns[1]
	box3 := harness.NewNode(t, env, boxArgs("box3", ip[2], cgroupRoot("box3"))...)
	box3.Netns = ns[2]
	boxes := []*harness.Node{box1, box2, box3}
	// Runs first among the cleanups: no kubelet may still run while the
	// boxes' host cleanups remove pod cgroups.
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})
	harness.Phase(t, "box1-ready", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
		if err := box1.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "single-box-holds-both-leases", func(t *testing.T) {
		waitHolders(ctx, t, box1, 30*time.Second, func(box string) bool { return box == "box1" })
	})

	// Both leases taken by another identity for 20 s: box 1 stops its
	// controller manager and scheduler, keeps running (etcd, apiserver,
	// kubelet), and takes the leases back once they expire, with working
	// controllers in the new term.
	harness.Phase(t, "lost-lease", func(t *testing.T) {
		pid := box1.Pid()
		for _, l := range leaderLeases {
			stealLease(ctx, t, box1, l, 20)
		}
		stolen := time.Now()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		err := harness.WaitFor(wctx, 250*time.Millisecond, func() bool {
			for _, l := range leaderLeases {
				if logLines(t, box1, "lost the lease", "kube-system/"+l) == 0 {
					return false
				}
			}
			return true
		})
		if err != nil {
			box1.DumpLog(60)
			t.Fatalf("box1 did not report both leases lost: %v", err)
		}
		t.Logf("box1 stopped its controller manager and scheduler %s after the steal", time.Since(stolen).Round(100*time.Millisecond))
		// With no box leading, a new Deployment gets no ReplicaSet.
		applyDeployment(ctx, t, box1, "during", 1)
		time.Sleep(3 * time.Second)
		if out, err := box1.Kubectl(ctx, "get", "replicasets", "-l", "app=during", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("a ReplicaSet was made while no box held the lease: %v %q", err, out)
		}
		holders := waitHolders(ctx, t, box1, 40*time.Second, func(box string) bool { return box == "box1" })
		t.Logf("leases back with box1 %s after the steal: %v", time.Since(stolen).Round(100*time.Millisecond), holders)
		if done, err := box1.Exited(); done || box1.Pid() != pid {
			t.Fatalf("box1's kubox exited after losing its leases: %v", err)
		}
		if n := logLines(t, box1, "leaderelection lost"); n != 0 {
			t.Errorf("upstream's lost-lease path ran (%d lines)", n)
		}
		out, err := box1.Kubectl(ctx, "get", "node", "box1", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || out != "True" {
			t.Errorf("box1 Node Ready = %q %v after the lost lease", out, err)
		}
		// The second term's controllers and scheduler work.
		waitRunning(ctx, t, box1, "during", 1, 90*time.Second)
		assertExactlyPods(ctx, t, box1, "during", 1)
		if _, err := box1.Kubectl(ctx, "delete", "deployment", "during", "--wait=false"); err != nil {
			t.Fatal(err)
		}
	})

	// A box killed and restarted (a crash, a power cut) keeps its lease
	// identity, so it renews the leases its previous run held at once
	// instead of running no controllers until they expire (15 s lease).
	harness.Phase(t, "unclean-restart-keeps-the-leases", func(t *testing.T) {
		before := map[string]string{}
		acquired := map[string]int{}
		for _, l := range leaderLeases {
			before[l] = leaseHolder(ctx, box1, l)
			acquired[l] = logLines(t, box1, "acquired the lease", "kube-system/"+l)
		}
		box1.Kill()
		killed := time.Now()
		startBoxNodeReady(ctx, t, box1)
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		err := harness.WaitFor(wctx, 100*time.Millisecond, func() bool {
			for _, l := range leaderLeases {
				if logLines(t, box1, "acquired the lease", "kube-system/"+l) <= acquired[l] {
					return false
				}
			}
			return true
		})
		took := time.Since(killed)
		if err != nil {
			box1.DumpLog(60)
			t.Fatalf("box1's new run did not take its leases back: %v", err)
		}
		t.Logf("leases back %s after the SIGKILL", took.Round(100*time.Millisecond))
		for _, l := range leaderLeases {
			if now := leaseHolder(ctx, box1, l); now != before[l] {
				t.Errorf("%s holder %q after the restart, want the kept identity %q", l, now, before[l])
			}
		}
		// A new identity would wait for the old lease to expire: 15 s
		// after its last renewal, plus a retry period.
		if took >= 15*time.Second {
			t.Errorf("leases back only %s after the SIGKILL, as if the old lease had to expire", took.Round(100*time.Millisecond))
		}
	})

	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
	for i, b := range []*harness.Node{box2, box3} {
		b.Args = append(b.Args, "--join", joinURL)
		// Tokens are single use: one per box.
		b.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
		startBox(ctx, t, b)
		// Box 1's Node is Ready already: wait for this box's own.
		name := fmt.Sprintf("box%d", i+2)
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool {
			out, err := b.Kubectl(wctx, "get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return err == nil && out == "True"
		})
		wcancel()
		if err != nil {
			t.Fatalf("%s Node not Ready: %v", name, err)
		}
		if err := b.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
	}

	harness.Phase(t, "one-holder-per-lease", func(t *testing.T) {
		waitHolders(ctx, t, box3, 10*time.Second, func(box string) bool { return box == "box1" })
		for _, b := range boxes[1:] {
			for _, l := range leaderLeases {
				if n := logLines(t, b, "acquired the lease", "kube-system/"+l); n != 0 {
					t.Errorf("%s acquired %s while box1 held it (%d times)", b.Netns, l, n)
				}
			}
		}
		// The symptom of the issue: three active ReplicaSet controllers
		// made 60 pods for 20 replicas.
		applyDeployment(ctx, t, box1, "twenty", 20)
		waitRunning(ctx, t, box1, "twenty", 20, 3*time.Minute)
		assertExactlyPods(ctx, t, box1, "twenty", 20)
		if _, err := box1.Kubectl(ctx, "delete", "deployment", "twenty", "--wait=false"); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "failover-after-SIGKILL", func(t *testing.T) {
		box1.Kill()
		killed := time.Now()
		holders := waitHolders(ctx, t, box2, 30*time.Second, func(box string) bool { return box == "box2" || box == "box3" })
		t.Logf("leases held by %v %s after box1's SIGKILL", holders, time.Since(killed).Round(100*time.Millisecond))
		// Box 1's Node still says Ready until the node controller's grace
		// period ends; keep new pods off it.
		if _, err := box2.Kubectl(ctx, "cordon", "box1"); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "scale-1-to-5", func(t *testing.T) {
		applyDeployment(ctx, t, box2, "scale", 1)
		waitRunning(ctx, t, box2, "scale", 1, 90*time.Second)
		if _, err := box2.Kubectl(ctx, "scale", "deployment", "scale", "--replicas=5"); err != nil {
			t.Fatal(err)
		}
		waitRunning(ctx, t, box2, "scale", 5, 90*time.Second)
		assertExactlyPods(ctx, t, box3, "scale", 5)
	})

	harness.Phase(t, "100-replicas-on-two-kubelets", func(t *testing.T) {
		applyDeployment(ctx, t, box3, "hundred", 100)
		waitRunning(ctx, t, box3, "hundred", 100, 8*time.Minute)
		pods := assertExactlyPods(ctx, t, box2, "hundred", 100)
		perNode := map[string]int{}
		for _, p := range pods {
			perNode[p.Node]++
		}
		if perNode["box2"] == 0 || perNode["box3"] == 0 || perNode["box1"] != 0 {
			t.Errorf("pods per node %v, want them on box2 and box3 only", perNode)
		}
		t.Logf("pods per node: %v", perNode)
	})
}
