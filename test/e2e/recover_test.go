package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// recoverConfigMaps is how many ConfigMaps the recovery must keep.
const recoverConfigMaps = 500

// TestEtcdRecover is the two-box site that loses box 1 (its only etcd voter)
// for good. box2 joined as a learner and runs a pod:
//
//   - `kubox etcd recover` on box2 is refused while box2's kubox runs, and
//     while box1 still answers (without --force);
//   - box1 SIGKILLed, recover on box2 (kubox stopped, pods kept) makes it a
//     one-box cluster: all 500 ConfigMaps there, new writes work, the pod
//     kept running (same container, same process, no restart);
//   - box1 started again with its stale data is refused with one line
//     (exit status 78), and serves no second cluster;
//   - a third box then joins box2.
func TestEtcdRecover(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxrc", 3)
	ns, ip := network.Namespaces, network.IPs
	box1 := harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, boxArgs("box1", ip[0], "--disable-agent")...)
	box1.Netns = ns[0]
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
	box2 := harness.NewNode(t, env, boxArgs("box2", ip[1], cgroupRoot("box2"), "--stop-pods-on-exit=false", "--join", joinURL)...)
	box2.Netns = ns[1]
	box3 := harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, boxArgs("box3", ip[2], "--disable-agent")...)
	box3.Netns = ns[2]
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})
	recoverArgs := []string{"etcd", "recover", "--data-dir", box2.DataDir, "--node-name", "box2", "--node-ip", ip[1]}

	harness.Phase(t, "box2-joins-as-learner", func(t *testing.T) {
		startBox(ctx, t, box1)
		box2.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
		startBoxNodeReady(ctx, t, box2)
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=learner" {
			t.Fatalf("after box2's join etcd has %s, want box1=voter,box2=learner", got)
		}
	})

	var cid, start string
	var pid int
	harness.Phase(t, "configmaps-and-pod-on-box2", func(t *testing.T) {
		if _, err := box1.Kubectl(ctx, "create", "namespace", "load"); err != nil {
			t.Fatal(err)
		}
		var list strings.Builder
		list.WriteString("apiVersion: v1\nkind: List\nitems:\n")
		for i := range recoverConfigMaps {
			fmt.Fprintf(&list, "- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm-%04d, namespace: load}, data: {i: \"%d\"}}\n", i, i)
		}
		mf := filepath.Join(box1.Root, "configmaps.yaml")
		if err := os.WriteFile(mf, []byte(list.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := box1.Kubectl(ctx, "apply", "-f", mf); err != nil {
			t.Fatal(err)
		}
		if err := box2.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		pod := filepath.Join(box2.Root, "kept.yaml")
		if err := os.WriteFile(pod, []byte(keptPod+"  nodeName: box2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := box2.Kubectl(ctx, "apply", "-f", pod); err != nil {
			t.Fatal(err)
		}
		if _, err := box2.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/kept", "--timeout=120s"); err != nil {
			t.Fatal(err)
		}
		var err error
		if cid, err = box2.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].containerID}"); err != nil {
			t.Fatal(err)
		}
		pid, start = containerProcess(ctx, t, box2, strings.TrimPrefix(cid, "containerd://"))
		// The learner has them all (its apiserver reads through box1).
		waitConfigMaps(ctx, t, recoverConfigMaps, box2)
	})

	harness.Phase(t, "refused-while-running-or-box1-answers", func(t *testing.T) {
		out, err := box2.Kubox(ctx, recoverArgs...)
		if err == nil || !strings.Contains(out, "kubox server is running") || !strings.Contains(out, "systemctl stop kubox") {
			t.Fatalf("recover while box2's kubox runs: %v %q", err, out)
		}
		if _, err := box2.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop box2: %v", err)
		}
		out, err = box2.Kubox(ctx, recoverArgs...)
		if err == nil || !strings.Contains(out, "box1 still answers at https://"+net.JoinHostPort(ip[0], "2380")) || !strings.Contains(out, "--force") {
			t.Fatalf("recover while box1 answers: %v %q", err, out)
		}
		if line := lastLine(out); !strings.HasPrefix(line, "kubox: etcd recover: refusing") {
			t.Errorf("refusal's last line: %q", line)
		}
		t.Logf("refused: %s", lastLine(out))
		if aside, _ := filepath.Glob(filepath.Join(box2.DataDir, "etcd.old-*")); len(aside) != 0 {
			t.Errorf("refused recover changed the data dir: %v", aside)
		}
	})

	harness.Phase(t, "recover-box2", func(t *testing.T) {
		box1.Kill() // for good: its ports answer no more
		begin := time.Now()
		out, err := box2.Kubox(ctx, recoverArgs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("recover took %s:\n%s", time.Since(begin).Round(time.Millisecond), out)
		for _, want := range []string{"a learner", "dropped box1", "kubox node remove box1"} {
			if !strings.Contains(out, want) {
				t.Errorf("recover output lacks %q", want)
			}
		}
		if got := processStart(pid); got != start {
			t.Fatalf("the pod's container (pid %d) did not outlive kubox's stop and the recovery", pid)
		}
		for _, name := range []string{"etcd", "join.json"} {
			if aside, _ := filepath.Glob(filepath.Join(box2.DataDir, name+".old-*")); len(aside) != 1 {
				t.Errorf("recover: want %s moved aside once, found %v", name, aside)
			}
		}
		startBoxNodeReady(ctx, t, box2)
		if got := describe(members(ctx, t, box2)); got != "box2=voter" {
			t.Fatalf("after recover etcd has %s, want box2=voter", got)
		}
		waitConfigMaps(ctx, t, recoverConfigMaps, box2)
		if _, err := box2.Kubectl(ctx, "create", "configmap", "-n", "load", "after-recover"); err != nil {
			t.Fatalf("write after recover: %v", err)
		}
		// A few kubelet sync loops: a replaced or restarted container shows by now.
		time.Sleep(20 * time.Second)
		if got, _ := box2.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].containerID}"); got != cid {
			t.Errorf("container %s replaced by %s", cid, got)
		}
		if got, _ := box2.Kubectl(ctx, "get", "pod", "kept", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); got != "0" {
			t.Errorf("restartCount %s, want 0", got)
		}
		if got := processStart(pid); got != start {
			t.Errorf("the pod's container (pid %d) is gone", pid)
		}
		if out, err := box2.Kubox(ctx, "node", "remove", "box1", "--data-dir", box2.DataDir, "--node-name", "box2"); err != nil {
			t.Logf("node remove box1 (box1 ran no agent, so it may have no Node): %v %s", err, out)
		}
	})

	harness.Phase(t, "stale-box1-refused", func(t *testing.T) {
		before, _ := os.ReadFile(box1.LogPath)
		begin := time.Now()
		box1.Start()
		done, err := box1.WaitExit(time.Minute)
		if !done {
			box1.DumpLog(50)
			t.Fatal("box1 with its stale data was not refused within a minute")
		}
		t.Logf("stale box1 refused in %s", time.Since(begin).Round(time.Millisecond))
		if code := exitCode(err); code != exitRemoved {
			t.Errorf("stale box1 exited with %v, want exit status %d", err, exitRemoved)
		}
		line := lastLineOf(t, box1)
		t.Logf("its last line: %s", line)
		for _, want := range []string{"removed from the cluster", "kubox etcd recover", box1.DataDir, "aside", "new token"} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal of the stale box1 lacks %q: %s", want, line)
			}
		}
		log, _ := os.ReadFile(box1.LogPath)
		for _, l := range strings.Split(string(log[len(before):]), "\n") {
			if strings.Contains(l, "component ready") && strings.Contains(l, "etcd") {
				t.Errorf("the stale box1's etcd was ready (clients could have written to it) before it refused: %s", l)
			}
		}
		if got := describe(members(ctx, t, box2)); got != "box2=voter" {
			t.Fatalf("after the stale box1's start etcd has %s, want box2=voter", got)
		}
	})

	harness.Phase(t, "box3-joins-box2", func(t *testing.T) {
		box3.Args = append(box3.Args, "--join", "https://"+net.JoinHostPort(ip[1], "6443"))
		box3.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box2, "1h")}
		startBox(ctx, t, box3)
		if got := describe(members(ctx, t, box2)); got != "box2=voter,box3=learner" {
			t.Fatalf("after box3's join etcd has %s, want box2=voter,box3=learner", got)
		}
		if _, err := box3.Kubectl(ctx, "get", "configmap", "-n", "load", "after-recover"); err != nil {
			t.Fatal(err)
		}
		waitConfigMaps(ctx, t, recoverConfigMaps+1, box3)
	})
}

// TestEtcdRecoverThreeBoxes: a three-box cluster (three voters, control
// plane only) loses two boxes for good; `kubox etcd recover` on the third,
// a voter, makes it a one-box cluster with its data.
func TestEtcdRecoverThreeBoxes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxrc3", 3)
	ns, ip := network.Namespaces, network.IPs
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
	boxes := make([]*harness.Node, 3)
	for i := range boxes {
		args := boxArgs(fmt.Sprintf("box%d", i+1), ip[i], "--disable-agent")
		if i > 0 {
			args = append(args, "--join", joinURL)
		}
		boxes[i] = harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, args...)
		boxes[i].Netns = ns[i]
	}
	box1, box2, box3 := boxes[0], boxes[1], boxes[2]
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})

	harness.Phase(t, "three-voters", func(t *testing.T) {
		startBox(ctx, t, box1)
		for _, b := range []*harness.Node{box2, box3} {
			// Tokens are single use: one per box.
			b.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
			startBox(ctx, t, b)
		}
		if err := harness.WaitFor(ctx, time.Second, func() bool {
			return describe(members(ctx, t, box1)) == "box1=voter,box2=voter,box3=voter"
		}); err != nil {
			t.Fatalf("etcd has %s, want three voters", describe(members(ctx, t, box1)))
		}
		if _, err := box1.Kubectl(ctx, "create", "configmap", "before-loss"); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err := box3.Kubectl(ctx, "get", "configmap", "before-loss")
			return err == nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "lose-two-and-recover", func(t *testing.T) {
		box1.Kill()
		box2.Kill()
		if _, err := box3.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop box3: %v", err)
		}
		out, err := box3.Kubox(ctx, "etcd", "recover", "--data-dir", box3.DataDir, "--node-name", "box3", "--node-ip", ip[2])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("recover:\n%s", out)
		for _, want := range []string{"a voter", "box1, box2"} {
			if !strings.Contains(out, want) {
				t.Errorf("recover output lacks %q", want)
			}
		}
		startBox(ctx, t, box3)
		if got := describe(members(ctx, t, box3)); got != "box3=voter" {
			t.Fatalf("after recover etcd has %s, want box3=voter", got)
		}
		if _, err := box3.Kubectl(ctx, "get", "configmap", "before-loss"); err != nil {
			t.Fatal(err)
		}
		if _, err := box3.Kubectl(ctx, "create", "configmap", "after-recover"); err != nil {
			t.Fatalf("write after recover: %v", err)
		}
	})
}
