package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"

	"github.com/kubox/kubox/internal/mounts"
	"github.com/kubox/kubox/test/harness"
)

const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
`

// TestSingleNode is the whole single-box story: start, node Ready, a
// Deployment of a locally built image Running and answering HTTP on its pod
// IPs, a clean SIGTERM, and a restart on the same data with everything back.
func TestSingleNode(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer waitCancel()

	harness.Phase(t, "start", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(waitCtx); err != nil {
			t.Fatal(err)
		}
		assertPodNetworkLast(t, n, 0)
		// The kubelet sets an OOM score it may set: a refused one costs
		// its start two 100 ms retries (hosts without CAP_SYS_RESOURCE).
		if logLines(t, n, "Failed to ApplyOOMScoreAdj") > 0 {
			t.Error("the kubelet could not set its OOM score")
		}
	})
	harness.Phase(t, "api", func(t *testing.T) {
		// The admin kubeconfig is a secret: 0600.
		if fi, err := os.Stat(n.Kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin kubeconfig %s: mode %v, err %v; want 0600", n.Kubeconfig, fi.Mode().Perm(), err)
		}
		// The apiserver reports the real Kubernetes version.
		out, err := n.Kubectl(ctx, "version", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var ver struct {
			ServerVersion struct{ GitVersion string } `json:"serverVersion"`
		}
		if err := json.Unmarshal([]byte(out), &ver); err != nil {
			t.Fatalf("kubectl version output: %v\n%s", err, out)
		}
		if ver.ServerVersion.GitVersion != "v1.36.3" {
			t.Errorf("apiserver /version gitVersion = %q, want v1.36.3", ver.ServerVersion.GitVersion)
		}
		assertBootstrapPolicy(ctx, t, n)
		assertEmbeddedKubectlTemplates(ctx, t, n)
		// Secrets are encrypted at rest: the raw etcd value is not plaintext.
		if _, err := n.Kubectl(ctx, "create", "secret", "generic", "probe", "--from-literal=k=kubox-plaintext-marker"); err != nil {
			t.Fatal(err)
		}
	})
	harness.Phase(t, "deployment", func(t *testing.T) {
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		manifest := filepath.Join(n.Root, "web.yaml")
		if err := os.WriteFile(manifest, []byte(webDeployment), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			t.Fatal(err)
		}
		for _, ip := range waitWebPods(ctx, t, n, 2, time.Time{}) {
			assertHTTP(t, ip)
		}
		// exec and logs go apiserver -> kubelet over TLS, each side verifying the
		// other's certificate.
		if out, err := n.Kubectl(ctx, "exec", "deploy/web", "--", "cat", "/www/index.html"); err != nil || !strings.Contains(out, "kubox-test ok") {
			t.Errorf("kubectl exec: %q %v", out, err)
		}
		if _, err := n.Kubectl(ctx, "logs", "deploy/web"); err != nil {
			t.Errorf("kubectl logs: %v", err)
		}
		assertKubeletServingCSR(ctx, t, n)
	})
	harness.Phase(t, "stop", func(t *testing.T) {
		// A bootstrap role lost while stopped comes back with the restart.
		if _, err := n.Kubectl(ctx, "delete", "clusterrole", "system:public-info-viewer"); err != nil {
			t.Fatal(err)
		}
		took, err := n.Stop(30 * time.Second)
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
		t.Logf("kubox stopped %s after SIGTERM", took.Round(time.Millisecond))
		assertNothingLeft(t, n)
	})
	harness.Phase(t, "restart", func(t *testing.T) {
		// Same data dir again: the Deployment is still there and its pods run.
		restarted := time.Now().Truncate(time.Second)
		logFrom := fileSize(n.LogPath)
		n.Start()
		// The Node still says Ready from before the stop as soon as the
		// apiserver serves, which can be before its post-start hooks
		// (checked below) are done: wait for the kubelet's own report,
		// which comes after kubox saw /readyz pass.
		if err := n.WaitNodeReadyFast(waitCtx, restarted); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "get", "deployment", "web"); err != nil {
			t.Fatalf("deployment lost across restart: %v", err)
		}
		assertBootstrapPolicy(ctx, t, n)
		assertPodNetworkLast(t, n, logFrom)
		if out, err := n.Kubectl(ctx, "get", "secret", "probe", "-o", "jsonpath={.data.k}"); err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("secret lost across restart: %q %v", out, err)
		}
		// The pods' status in the API still says Running from before the stop;
		// wait for containers started since the restart, and Ready.
		for _, ip := range waitWebPods(ctx, t, n, 2, restarted) {
			assertHTTP(t, ip)
		}
	})
	harness.Phase(t, "second-stop", func(t *testing.T) {
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatalf("second stop: %v", err)
		}
		assertNothingLeft(t, n)
		assertEncryptedAtRest(t, n)
	})
}

// waitWebPods waits for want Ready web pods whose container started at or
// after since, and returns their IPs.
func waitWebPods(ctx context.Context, t *testing.T, n *harness.Node, want int, since time.Time) []string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		out, err := n.Kubectl(ctx, "get", "pods", "-l", "app=web", "-o",
			`jsonpath={range .items[*]}{.status.phase} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status} {.status.containerStatuses[0].state.running.startedAt} {.metadata.deletionTimestamp}{"\n"}{end}`)
		if err == nil {
			var ips []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) != 4 || f[0] != "Running" || f[2] != "True" {
					continue
				}
				if at, err := time.Parse(time.RFC3339, f[3]); err == nil && !at.Before(since) {
					ips = append(ips, f[1])
				}
			}
			if len(ips) == want {
				return ips
			}
			last = out
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	desc, _ := n.Kubectl(ctx, "describe", "pods", "-l", "app=web")
	t.Fatalf("want %d Running, Ready web pods; last:\n%s\n%s", want, last, desc)
	return nil
}

func assertHTTP(t *testing.T, ip string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	for range 20 {
		resp, err := client.Get(fmt.Sprintf("http://%s:8080/", ip))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), "kubox-test ok") {
				return
			}
			lastErr = fmt.Errorf("status %s body %q", resp.Status, body)
		} else {
			lastErr = err
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("pod %s did not answer HTTP from the host: %v", ip, lastErr)
}

// assertNothingLeft checks that a stopped kubox left no process, shim or
// mount behind.
func assertNothingLeft(t *testing.T, n *harness.Node) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		procs := n.Processes()
		if len(procs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, p := range procs {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
				desc = append(desc, fmt.Sprintf("%d: %s", p, strings.ReplaceAll(string(cmd), "\x00", " ")))
			}
			t.Fatalf("processes left after stop:\n%s", strings.Join(desc, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, dir := range []string{n.DataDir, n.RunDir} {
		if left, err := mounts.Under(dir); err != nil || len(left) > 0 {
			t.Fatalf("mounts left under %s after stop: %v %v", dir, left, err)
		}
	}
}

// assertEncryptedAtRest looks for the secret's plaintext in etcd's files.
func assertEncryptedAtRest(t *testing.T, n *harness.Node) {
	t.Helper()
	found := false
	_ = filepath.Walk(filepath.Join(n.DataDir, "etcd"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(data), "kubox-plaintext-marker") {
			found = true
		}
		return nil
	})
	if found {
		t.Error("a Secret's value is stored in plaintext in etcd: encryption at rest is off")
	}
}

// assertBootstrapPolicy checks that kubox's bootstrap hooks (not upstream's,
// which wait a second first) ran before /readyz said ok: every default
// role and the system PriorityClasses exist.
func assertBootstrapPolicy(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	readyz, err := n.Kubectl(ctx, "get", "--raw", "/readyz?verbose")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[+]poststarthook/kubox/bootstrap-roles ok", "[+]poststarthook/kubox/bootstrap-system-priority-classes ok"} {
		if !strings.Contains(readyz, want) {
			t.Errorf("/readyz lacks %q:\n%s", want, readyz)
		}
	}
	for _, upstream := range []string{"poststarthook/rbac/bootstrap-roles", "poststarthook/scheduling/bootstrap-system-priority-classes"} {
		if strings.Contains(readyz, upstream) {
			t.Errorf("/readyz still has upstream's %s:\n%s", upstream, readyz)
		}
	}
	out, err := n.Kubectl(ctx, "get", "clusterroles,clusterrolebindings,priorityclasses", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(out) {
		have[l] = true
	}
	var missing []string
	for _, r := range append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...) {
		if !have["clusterrole.rbac.authorization.k8s.io/"+r.Name] {
			missing = append(missing, "clusterrole "+r.Name)
		}
	}
	for _, b := range append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...) {
		if !have["clusterrolebinding.rbac.authorization.k8s.io/"+b.Name] {
			missing = append(missing, "clusterrolebinding "+b.Name)
		}
	}
	for _, pc := range []string{"system-node-critical", "system-cluster-critical"} {
		if !have["priorityclass.scheduling.k8s.io/"+pc] {
			missing = append(missing, "priorityclass "+pc)
		}
	}
	if len(missing) > 0 {
		t.Errorf("after /readyz, the bootstrap policy lacks %v", missing)
	}
	if _, err := n.Kubectl(ctx, "get", "role", "-n", "kube-system", "extension-apiserver-authentication-reader"); err != nil {
		t.Errorf("namespaced bootstrap role missing: %v", err)
	}
}

// assertPodNetworkLast checks, in the log of one start (from offset), that
// the CNI config (which lets pods have a network) was written only after
// the service proxy and the network policies were ready: on a fresh box
// the kubelet no longer waits for them, the pod network does (on a restart,
// which finds the config of the run before, the kubelet waits for them).
func assertPodNetworkLast(t *testing.T, n *harness.Node, offset int64) {
	t.Helper()
	// The Node may be Ready (on a restart, still from before) before kubox
	// has logged its own start's end.
	var data []byte
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := harness.WaitFor(ctx, 100*time.Millisecond, func() bool {
		var err error
		data, err = os.ReadFile(n.LogPath)
		return err == nil && int64(len(data)) >= offset && strings.Contains(string(data[offset:]), `msg="kubox is ready"`)
	}); err != nil {
		t.Fatalf("kubox did not log that it is ready: %v", err)
	}
	at := map[string]int{}
	for i, l := range strings.Split(string(data[offset:]), "\n") {
		for key, marks := range map[string][]string{
			"proxy":          {`msg="component ready"`, "component=proxy "},
			"network-policy": {`msg="component ready"`, "component=network-policy "},
			"cni":            {`msg="pod network configured"`},
		} {
			if _, seen := at[key]; !seen && containsAll(l, marks...) {
				at[key] = i
			}
		}
	}
	for _, key := range []string{"proxy", "network-policy", "cni"} {
		if _, ok := at[key]; !ok {
			t.Fatalf("the start's log has no %s line", key)
		}
	}
	if at["cni"] < at["proxy"] || at["cni"] < at["network-policy"] {
		t.Errorf("CNI config written (log line %d) before the proxy (%d) or the network policies (%d) were ready", at["cni"], at["proxy"], at["network-policy"])
	}
}
