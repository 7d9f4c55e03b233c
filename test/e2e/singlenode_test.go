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
		n.Start()
		if err := n.WaitNodeReady(waitCtx); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "get", "deployment", "web"); err != nil {
			t.Fatalf("deployment lost across restart: %v", err)
		}
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
