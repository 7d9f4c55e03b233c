package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const proxyManifests = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]
`

// TestProxyNFTables: kubox server on this host (no ip_vs) picks nftables and
// says why; a Deployment behind a Service answers on its ClusterIP from the
// host and from another pod, and on its NodePort on the node IP; scaling to
// 0 and back updates the backends; deleting the Service removes its rules.
// Then a restart in iptables mode removes the nftables rules the first run
// left, serves the Service with iptables, and a stop with cleanup leaves no
// rule of either mode. Last, forcing ipvs fails at start with one line.
func TestProxyNFTables(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env)
	args := n.Args
	n.Args = append(append([]string{}, args...), "--proxy-cleanup-on-stop=false")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	harness.Phase(t, "start-picks-nftables", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		logData, _ := os.ReadFile(n.LogPath)
		if !strings.Contains(string(logData), `msg="service proxy mode" component=proxy mode=nftables why="kernel has no ip_vs"`) {
			t.Errorf("no log line saying the proxy chose nftables because the kernel has no ip_vs")
		}
	})

	harness.Phase(t, "workloads", func(t *testing.T) {
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		apply(ctx, t, n, "web.yaml", webDeployment)
		apply(ctx, t, n, "proxy.yaml", proxyManifests)
		waitWebPods(ctx, t, n, 2, time.Time{})
		waitPodRunning(ctx, t, n, "client")
	})

	var clusterIP, svcAddr, svcURL string
	harness.Phase(t, "service-answers", func(t *testing.T) {
		clusterIP = kubectlOut(ctx, t, n, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
		nodePort := kubectlOut(ctx, t, n, "get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}")
		nodeIP := kubectlOut(ctx, t, n, "get", "node", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
		svcAddr = net.JoinHostPort(clusterIP, "80")
		svcURL = "http://" + svcAddr + "/"
		nodePortURL := "http://" + net.JoinHostPort(nodeIP, nodePort) + "/"
		t.Logf("Service web: ClusterIP %s, NodePort %s:%s", clusterIP, nodeIP, nodePort)

		if !strings.Contains(nft(t, "list", "table", "ip", "kube-proxy"), clusterIP) {
			t.Fatalf("ClusterIP %s not in the nftables rules", clusterIP)
		}
		waitHTTP(t, svcURL, true, "ClusterIP from the host")
		waitHTTP(t, nodePortURL, true, "NodePort on the node IP")
		waitPodHTTP(ctx, t, n, "client", svcAddr, true)
	})

	harness.Phase(t, "scale-to-zero-and-back", func(t *testing.T) {
		// No backends: the Service refuses; backends back: it answers again.
		kubectl(ctx, t, n, "scale", "deployment", "web", "--replicas=0")
		waitHTTP(t, svcURL, false, "ClusterIP with the Deployment scaled to 0")
		waitPodHTTP(ctx, t, n, "client", svcAddr, false)
		kubectl(ctx, t, n, "scale", "deployment", "web", "--replicas=2")
		waitHTTP(t, svcURL, true, "ClusterIP after scaling back to 2")
		waitPodHTTP(ctx, t, n, "client", svcAddr, true)
	})

	harness.Phase(t, "delete-service-removes-rules", func(t *testing.T) {
		// Deleting the Service removes its rules. (The proxier flushes the
		// Service's chains at once and deletes the empty chains at a later
		// sync, as upstream does.)
		if len(serviceRules(nft(t, "list", "table", "ip", "kube-proxy"), "default/web/", clusterIP)) == 0 {
			t.Fatal("found no rules of the Service before deleting it")
		}
		kubectl(ctx, t, n, "delete", "svc", "web")
		waitFor(t, "the Service's rules to go", func() (bool, string) {
			left := serviceRules(nft(t, "list", "table", "ip", "kube-proxy"), "default/web/", clusterIP)
			return len(left) == 0, strings.Join(left, "\n")
		})
	})

	harness.Phase(t, "stop-without-cleanup-keeps-rules", func(t *testing.T) {
		// A stop without cleanup leaves the rules (Services of surviving pods
		// keep working while kubox restarts).
		apply(ctx, t, n, "proxy.yaml", proxyManifests)
		clusterIP = kubectlOut(ctx, t, n, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
		svcAddr = net.JoinHostPort(clusterIP, "80")
		svcURL = "http://" + svcAddr + "/"
		waitHTTP(t, svcURL, true, "ClusterIP of the re-created Service")
		if _, err := n.Stop(40 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if !nftTableExists(t, "ip", "kube-proxy") {
			t.Fatal("with --proxy-cleanup-on-stop=false the nftables rules are gone after stop")
		}
	})

	harness.Phase(t, "restart-in-iptables-mode", func(t *testing.T) {
		// Restart in iptables mode: the nftables rules of the last run go, the
		// Service is served by iptables rules; a stop with cleanup leaves none.
		n.Args = append(append([]string{}, args...), "--proxy-mode", "iptables")
		n.Start()
		// The Node still says Ready from the last run: wait for this run.
		waitLog(t, n, `msg="kubox is ready"`, 2)
		if nftTableExists(t, "ip", "kube-proxy") {
			t.Error("the nftables rules of the previous run are still there in iptables mode")
		}
		logData, _ := os.ReadFile(n.LogPath)
		if !strings.Contains(string(logData), `msg="removed the rules of the previous proxy mode" component=proxy previous=nftables mode=iptables`) {
			t.Error("no log line saying the previous mode's rules were removed")
		}
		waitPodRunning(ctx, t, n, "client")
		waitWebPods(ctx, t, n, 2, time.Time{})
		waitFor(t, "iptables rules for the Service", func() (bool, string) {
			out := iptablesNAT(t)
			return strings.Contains(out, clusterIP) && strings.Contains(out, "KUBE-SERVICES"), out
		})
		waitHTTP(t, svcURL, true, "ClusterIP from the host in iptables mode")
		waitPodHTTP(ctx, t, n, "client", svcAddr, true)
	})

	harness.Phase(t, "stop-with-cleanup", func(t *testing.T) {
		if _, err := n.Stop(40 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if nftTableExists(t, "ip", "kube-proxy") {
			t.Error("nftables rules left after a stop with cleanup")
		}
		if out := iptablesNAT(t); strings.Contains(out, "KUBE-SERVICES") || strings.Contains(out, "KUBE-SVC-") {
			t.Errorf("iptables rules left after a stop with cleanup:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "agent", "proxy-mode")); !os.IsNotExist(err) {
			t.Errorf("proxy mode record left after a stop with cleanup: %v", err)
		}
	})

	harness.Phase(t, "forced-ipvs-refused", func(t *testing.T) {
		// Forcing ipvs on this kernel: one clear line, non-zero exit, at once.
		begin := time.Now()
		out, err := exec.CommandContext(ctx, env.Bin, append(append([]string{}, args...), "--proxy-mode", "ipvs")...).CombinedOutput()
		if err == nil {
			t.Fatalf("kubox server --proxy-mode ipvs ran on a kernel without ip_vs:\n%s", out)
		}
		if !strings.Contains(string(out), "proxy mode ipvs: kernel has no ip_vs; load the modules (modprobe ip_vs ip_vs_rr)") {
			t.Errorf("forced ipvs without ip_vs; output:\n%s", out)
		}
		t.Logf("forced ipvs refused after %s: %s", time.Since(begin).Round(time.Millisecond), lastLine(string(out)))
	})
}

// waitLog waits until the server's log has count lines containing s.
func waitLog(t *testing.T, n *harness.Node, s string, count int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d log lines with %s", count, s), func() (bool, string) {
		data, _ := os.ReadFile(n.LogPath)
		if done, err := n.Exited(); done {
			t.Fatalf("kubox exited: %v", err)
		}
		return strings.Count(string(data), s) >= count, ""
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func apply(ctx context.Context, t *testing.T, n *harness.Node, name, manifest string) {
	t.Helper()
	p := filepath.Join(n.Root, name)
	if err := os.WriteFile(p, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(ctx, t, n, "apply", "-f", p)
}

func kubectl(ctx context.Context, t *testing.T, n *harness.Node, args ...string) {
	t.Helper()
	if _, err := n.Kubectl(ctx, args...); err != nil {
		t.Fatal(err)
	}
}

func kubectlOut(ctx context.Context, t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	out, err := n.Kubectl(ctx, args...)
	if err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("kubectl %v: %q %v", args, out, err)
	}
	return strings.TrimSpace(out)
}

func waitPodRunning(ctx context.Context, t *testing.T, n *harness.Node, name string) {
	t.Helper()
	waitFor(t, "pod "+name+" Running", func() (bool, string) {
		out, err := n.Kubectl(ctx, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		return err == nil && out == "Running", fmt.Sprint(out, err)
	})
}

// waitFor polls cond for up to 90 s.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	t.Fatalf("timed out waiting for %s; last:\n%s", what, last)
}

// waitHTTP waits until url answers with the test page (want) or cannot be
// reached at all (!want).
func waitHTTP(t *testing.T, url string, want bool, what string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, what, func() (bool, string) {
		resp, err := client.Get(url)
		if err != nil {
			return !want, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok := strings.Contains(string(body), "kubox-test ok")
		return ok == want, fmt.Sprintf("%s %q", resp.Status, body)
	})
}

// waitPodHTTP is waitHTTP from inside a pod, with busybox nc (the static
// busybox's wget crashes resolving names without NSS libraries).
func waitPodHTTP(ctx context.Context, t *testing.T, n *harness.Node, pod, addr string, want bool) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	waitFor(t, fmt.Sprintf("%s from pod %s (answer: %v)", addr, pod, want), func() (bool, string) {
		out, err := n.Kubectl(ctx, "exec", pod, "--", "sh", "-c",
			fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 %s %s`, host, port))
		ok := err == nil && strings.Contains(out, "kubox-test ok")
		return ok == want, fmt.Sprint(out, err)
	})
}

func nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("nft", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
	return string(out)
}

// serviceRules returns the rules of an nft table listing that belong to a
// Service: those in chains whose name contains chainPart, and any line that
// names ip.
func serviceRules(listing, chainPart, ip string) []string {
	var out []string
	chain := ""
	for _, l := range strings.Split(listing, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "chain ") && strings.HasSuffix(l, "{"):
			chain = strings.TrimSuffix(strings.TrimPrefix(l, "chain "), " {")
		case l == "}":
			chain = ""
		case strings.Contains(l, ip+" ") || strings.Contains(l, ip+"/") || strings.HasSuffix(l, ip):
			out = append(out, l)
		case l != "" && strings.Contains(chain, chainPart):
			out = append(out, chain+": "+l)
		}
	}
	return out
}

func nftTableExists(t *testing.T, family, name string) bool {
	t.Helper()
	return exec.Command("nft", "list", "table", family, name).Run() == nil
}

func iptablesNAT(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t nat -S: %v: %s", err, out)
	}
	return string(out)
}

// The proxy's setup (removing other modes' rules, building the proxier)
// runs while the apiserver starts, as a component of its own. A start that
// fails after it ran, here a start timeout shorter than the apiserver's
// start, undoes it as a stop does: no mode record, no rules.
func TestProxySetupUndoneWhenStartFails(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env, "--start-timeout", "1s")
	n.Start()
	exited, err := n.WaitExit(2 * time.Minute)
	if !exited {
		t.Fatal("kubox still runs 2 minutes after a 1 s start timeout")
	}
	if err == nil {
		t.Fatal("kubox exited 0 although its start timed out")
	}
	if logLines(t, n, `msg="kubox is ready"`) > 0 {
		t.Fatal("the start finished within 1 s: this test no longer makes it fail")
	}
	if logLines(t, n, `msg="component ready"`, "component=proxy-setup") == 0 {
		t.Skip("the start failed before the proxy's setup was done (a slow etcd start?): nothing to undo on this run")
	}
	if logLines(t, n, `msg="component ready"`, "component=proxy ") > 0 {
		t.Fatal("the proxy itself started: this test is about a setup without it")
	}
	if logLines(t, n, `msg="service rules removed"`) != 1 {
		t.Error("no log line saying the service rules were removed")
	}
	if nftTableExists(t, "ip", "kube-proxy") {
		t.Error("nftables rules left after the failed start")
	}
	if _, err := os.Stat(filepath.Join(n.DataDir, "agent", "proxy-mode")); !os.IsNotExist(err) {
		t.Errorf("proxy mode record left after the failed start: %v", err)
	}
}
