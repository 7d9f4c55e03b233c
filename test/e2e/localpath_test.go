package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// volumeSet is a StatefulSet whose pods each write, on their first start
// only, a unique line to their volume, and then keep running. Its claims
// name no StorageClass: the default class (kubox's local-path) serves them.
// spread, when set, puts the two pods on different boxes.
func volumeSet(spread bool) string {
	affinity := ""
	if spread {
		affinity = `
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: vol}}
            topologyKey: kubernetes.io/hostname`
	}
	return `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: vol, namespace: default}
spec:
  replicas: 2
  serviceName: vol
  selector: {matchLabels: {app: vol}}
  template:
    metadata: {labels: {app: vol}}
    spec:
      terminationGracePeriodSeconds: 1` + affinity + `
      containers:
      - name: c
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "test -f /data/hello || echo \"$(hostname) $RANDOM$RANDOM\" > /data/hello; exec sleep 100000"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
`
}

// retainedClaim: a claim of the Retain class and a pod that writes to it.
const retainedClaim = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: keep, namespace: default}
spec:
  storageClassName: local-path-retain
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 8Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: keeper, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, "echo kept > /data/kept; exec sleep 100000"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: keep}
`

// TestLocalPathVolumes is the single-box story of local persistent
// volumes: kubox's StorageClasses exist (local-path the default), a
// StatefulSet's claims get directories in the storage dir and PVs with
// node affinity to the box and the requested capacity, what a pod wrote
// survives the pod's re-creation and a restart of kubox, a deleted claim
// of the Delete class takes its directory and PV with it, and the Retain
// class keeps both.
func TestLocalPathVolumes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--node-name", "lp1")
	storage := filepath.Join(n.DataDir, "storage")

	harness.Phase(t, "node-ready", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "classes", func(t *testing.T) {
		out := waitKubectl(ctx, t, n, "get", "storageclass", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.provisioner} {.reclaimPolicy} {.volumeBindingMode} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}{"\n"}{end}`)
		want := "local-path kubox.io/local-path Delete WaitForFirstConsumer true\nlocal-path-retain kubox.io/local-path Retain WaitForFirstConsumer \n"
		if out != want {
			t.Fatalf("storage classes:\n%s\nwant:\n%s", out, want)
		}
	})

	written := map[string]string{} // pod -> the line it wrote
	harness.Phase(t, "statefulset", func(t *testing.T) {
		begin := time.Now()
		apply(ctx, t, n, "vol.yaml", volumeSet(false))
		if _, err := n.Kubectl(ctx, "rollout", "status", "statefulset/vol", "--timeout=180s"); err != nil {
			dumpVolumes(ctx, t, n)
			t.Fatal(err)
		}
		t.Logf("StatefulSet of 2 with volumes ready in %s", time.Since(begin).Round(100*time.Millisecond))
		for _, pod := range []string{"vol-0", "vol-1"} {
			written[pod] = readHello(ctx, t, n, pod)
			if !strings.HasPrefix(written[pod], pod+" ") {
				t.Fatalf("%s wrote %q", pod, written[pod])
			}
			pv := volumeOf(ctx, t, n, "data-"+pod)
			if pv.node != "lp1" || pv.capacity != "16Mi" || pv.reclaim != "Delete" || filepath.Dir(pv.path) != storage {
				t.Fatalf("PV of data-%s: %+v; want node affinity lp1, capacity 16Mi, reclaim Delete, a dir in %s", pod, pv, storage)
			}
			fi, err := os.Stat(pv.path)
			if err != nil || fi.Mode().Perm() != 0o777 {
				t.Fatalf("volume dir %s: %v %v, want a 0777 dir", pv.path, fi, err)
			}
			if data, err := os.ReadFile(filepath.Join(pv.path, "hello")); err != nil || strings.TrimSpace(string(data)) != written[pod] {
				t.Fatalf("%s/hello on the host: %q %v, want what %s wrote", pv.path, data, err, pod)
			}
		}
		if fi, err := os.Stat(storage); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("storage dir %s: %v %v, want 0700", storage, fi, err)
		}
	})

	harness.Phase(t, "pod-recreated", func(t *testing.T) {
		uid, _ := n.Kubectl(ctx, "get", "pod", "vol-0", "-o", "jsonpath={.metadata.uid}")
		if _, err := n.Kubectl(ctx, "delete", "pod", "vol-0", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		waitSetReady(ctx, t, n)
		if again, _ := n.Kubectl(ctx, "get", "pod", "vol-0", "-o", "jsonpath={.metadata.uid}"); again == uid {
			t.Fatal("vol-0 was not re-created")
		}
		if got := readHello(ctx, t, n, "vol-0"); got != written["vol-0"] {
			t.Fatalf("re-created vol-0 reads %q, want %q", got, written["vol-0"])
		}
	})

	harness.Phase(t, "kubox-restarted", func(t *testing.T) {
		if _, err := n.Stop(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		waitSetReady(ctx, t, n)
		for pod, line := range written {
			if got := readHello(ctx, t, n, pod); got != line {
				t.Fatalf("after the restart %s reads %q, want %q", pod, got, line)
			}
		}
	})

	harness.Phase(t, "claim-deleted", func(t *testing.T) {
		pv := volumeOf(ctx, t, n, "data-vol-1")
		// The StatefulSet keeps its claims; scale down so vol-1's is free.
		if _, err := n.Kubectl(ctx, "scale", "statefulset/vol", "--replicas=1"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "wait", "--for=delete", "pod/vol-1", "--timeout=60s"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "delete", "pvc", "data-vol-1"); err != nil {
			t.Fatal(err)
		}
		waitGone(ctx, t, n, pv)
		if _, err := os.Stat(volumeOf(ctx, t, n, "data-vol-0").path); err != nil {
			t.Errorf("vol-0's directory went too: %v", err)
		}
	})

	harness.Phase(t, "retain", func(t *testing.T) {
		apply(ctx, t, n, "keep.yaml", retainedClaim)
		if _, err := n.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/keeper", "--timeout=120s"); err != nil {
			dumpVolumes(ctx, t, n)
			t.Fatal(err)
		}
		pv := volumeOf(ctx, t, n, "keep")
		if pv.reclaim != "Retain" || pv.node != "lp1" || pv.capacity != "8Mi" {
			t.Fatalf("PV of keep: %+v", pv)
		}
		if _, err := n.Kubectl(ctx, "delete", "pod", "keeper", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "delete", "pvc", "keep", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		phase := ""
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		if err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool {
			phase, _ = n.Kubectl(ctx, "get", "pv", pv.name, "-o", "jsonpath={.status.phase}")
			return phase == "Released"
		}); err != nil {
			t.Fatalf("PV %s of the deleted Retain claim: phase %q, want Released", pv.name, phase)
		}
		// Give a wrong deleter time to act.
		time.Sleep(5 * time.Second)
		if _, err := n.Kubectl(ctx, "get", "pv", pv.name); err != nil {
			t.Fatalf("Retain PV deleted: %v", err)
		}
		if data, err := os.ReadFile(filepath.Join(pv.path, "kept")); err != nil || string(data) != "kept\n" {
			t.Fatalf("Retain volume's data: %q %v", data, err)
		}
	})
}

// TestLocalPathTwoBoxes: on two kubelet boxes, a StatefulSet whose pods
// must be on different boxes gets one volume on each; each PV's node
// affinity names the box whose storage dir holds its directory, and a
// deleted claim's directory goes from the box that held it.
func TestLocalPathTwoBoxes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxlp", 2)
	ns, ip := network.Namespaces, network.IPs

	box1 := harness.NewNode(t, env, boxArgs("box1", ip[0], cgroupRoot("box1"))...)
	box1.Netns = ns[0]
	box2 := harness.NewNode(t, env, boxArgs("box2", ip[1], cgroupRoot("box2"), "--join", "https://"+ip[0]+":6443")...)
	box2.Netns = ns[1]
	// Runs first among the cleanups: no kubelet may still run while the
	// boxes' host cleanups remove pod cgroups.
	t.Cleanup(func() {
		box2.Kill()
		box1.Kill()
	})
	harness.Phase(t, "two-boxes", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
		box2.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
		startBox(ctx, t, box2)
		waitNodesReady(ctx, t, box1, "box1=True box2=True")
		for _, b := range []*harness.Node{box1, box2} {
			if err := b.ImportImage(ctx, "busybox.tar"); err != nil {
				t.Fatal(err)
			}
		}
	})

	boxes := map[string]*harness.Node{"box1": box1, "box2": box2}
	harness.Phase(t, "one-volume-per-box", func(t *testing.T) {
		apply(ctx, t, box1, "vol.yaml", volumeSet(true))
		if _, err := box1.Kubectl(ctx, "rollout", "status", "statefulset/vol", "--timeout=180s"); err != nil {
			dumpVolumes(ctx, t, box1)
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, pod := range []string{"vol-0", "vol-1"} {
			node, err := box1.Kubectl(ctx, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}")
			if err != nil {
				t.Fatal(err)
			}
			pv := volumeOf(ctx, t, box1, "data-"+pod)
			t.Logf("%s on %s: PV %s, node affinity %s, path %s", pod, node, pv.name, pv.node, pv.path)
			if pv.node != node {
				t.Fatalf("PV of %s (on %s) has node affinity %s", pod, node, pv.node)
			}
			seen[node] = true
			for name, b := range boxes {
				mine := filepath.Dir(pv.path) == filepath.Join(b.DataDir, "storage")
				_, err := os.Stat(filepath.Join(b.DataDir, "storage", filepath.Base(pv.path)))
				if mine != (name == node) || (err == nil) != (name == node) {
					t.Fatalf("PV %s of %s on %s: path %s; in %s's storage dir: %v", pv.name, pod, node, pv.path, name, err)
				}
			}
			if got := readHello(ctx, t, box1, pod); !strings.HasPrefix(got, pod+" ") {
				t.Fatalf("%s on %s reads %q", pod, node, got)
			}
		}
		if len(seen) != 2 {
			t.Fatalf("pods on %v, want one on each box", seen)
		}
	})

	harness.Phase(t, "claim-deleted-on-its-box", func(t *testing.T) {
		if _, err := box1.Kubectl(ctx, "delete", "statefulset", "vol", "--wait=true"); err != nil {
			t.Fatal(err)
		}
		for _, pod := range []string{"vol-0", "vol-1"} {
			if _, err := box1.Kubectl(ctx, "wait", "--for=delete", "pod/"+pod, "--timeout=60s"); err != nil {
				t.Fatal(err)
			}
		}
		var pvs []volume
		for _, pod := range []string{"vol-0", "vol-1"} {
			pvs = append(pvs, volumeOf(ctx, t, box1, "data-"+pod))
			if _, err := box1.Kubectl(ctx, "delete", "pvc", "data-"+pod); err != nil {
				t.Fatal(err)
			}
		}
		for _, pv := range pvs {
			waitGone(ctx, t, box1, pv)
		}
	})
}

// volume is what the tests check of a claim's PV.
type volume struct {
	name, node, path, capacity, reclaim string
}

// volumeOf waits for claim to be bound and returns its PV.
func volumeOf(ctx context.Context, t *testing.T, n *harness.Node, claim string) volume {
	t.Helper()
	name := ""
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool {
		name, _ = n.Kubectl(ctx, "get", "pvc", claim, "-o", "jsonpath={.spec.volumeName}")
		return name != ""
	}); err != nil {
		dumpVolumes(ctx, t, n)
		t.Fatalf("claim %s not bound: %v", claim, err)
	}
	out, err := n.Kubectl(ctx, "get", "pv", name, "-o", `jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}|{.spec.local.path}|{.spec.capacity.storage}|{.spec.persistentVolumeReclaimPolicy}`)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(out, "|")
	if len(f) != 4 {
		t.Fatalf("PV %s: %q", name, out)
	}
	return volume{name: name, node: f[0], path: f[1], capacity: f[2], reclaim: f[3]}
}

// waitGone waits for pv and its directory to be deleted.
func waitGone(ctx context.Context, t *testing.T, n *harness.Node, pv volume) {
	t.Helper()
	begin := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool {
		_, err := n.Kubectl(ctx, "get", "pv", pv.name)
		_, serr := os.Stat(pv.path)
		return err != nil && strings.Contains(err.Error(), "NotFound") && os.IsNotExist(serr)
	}); err != nil {
		out, _ := n.Kubectl(ctx, "get", "pv", pv.name, "-o", "yaml")
		_, serr := os.Stat(pv.path)
		t.Fatalf("PV %s or its directory %s not deleted (dir: %v):\n%s", pv.name, pv.path, serr, out)
	}
	t.Logf("PV %s and %s deleted %s after its claim", pv.name, pv.path, time.Since(begin).Round(100*time.Millisecond))
}

// readHello reads what pod wrote to its volume. It retries for a while:
// after a restart the pod's status may still say Ready from before, while
// the kubelet does not answer yet or the container is being re-created.
func readHello(ctx context.Context, t *testing.T, n *harness.Node, pod string) string {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if out, err = n.Kubectl(ctx, "exec", pod, "--", "cat", "/data/hello"); err == nil && out != "" {
			return strings.TrimSpace(out)
		}
	}
	t.Fatalf("read /data/hello in %s: %q %v", pod, out, err)
	return ""
}

// waitSetReady waits for both pods of StatefulSet vol to be Ready.
func waitSetReady(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := harness.WaitFor(wctx, time.Second, func() bool {
		out, err := n.Kubectl(ctx, "get", "pods", "-l", "app=vol", "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}`)
		return err == nil && out == "TrueTrue"
	}); err != nil {
		dumpVolumes(ctx, t, n)
		t.Fatalf("StatefulSet vol not ready: %v", err)
	}
}

// waitKubectl retries a kubectl get until it answers something.
func waitKubectl(ctx context.Context, t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	var out string
	var err error
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if out, err = n.Kubectl(ctx, args...); err == nil && strings.Count(out, "\n") >= 2 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return out
}

func dumpVolumes(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	out, _ := n.Kubectl(ctx, "get", "pvc,pv,pods", "-A", "-o", "wide")
	ev, _ := n.Kubectl(ctx, "get", "events", "-A", "--sort-by=.lastTimestamp")
	t.Log(fmt.Sprintf("%s\n%s", out, ev))
}
