package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/kubox/kubox/test/harness"
)

// testCSIDriver is the smallest CSI node plugin the kubelet accepts: the
// plugin registration service on a socket in the kubelet's
// plugins_registry, and CSI Identity and Node (NodeGetInfo) on its
// endpoint. It remembers what the kubelet told it about the registration.
type testCSIDriver struct {
	registerapi.UnimplementedRegistrationServer
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	name, nodeID, endpoint string

	mu     sync.Mutex
	status *registerapi.RegistrationStatus
}

func (d *testCSIDriver) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: d.name, Endpoint: d.endpoint, SupportedVersions: []string{"1.0.0"}}, nil
}

func (d *testCSIDriver) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	d.mu.Lock()
	d.status = s
	d.mu.Unlock()
	return &registerapi.RegistrationStatusResponse{}, nil
}

// registration is what the kubelet last reported ("" before it did).
func (d *testCSIDriver) registration() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status == nil {
		return ""
	}
	if d.status.PluginRegistered {
		return "registered"
	}
	return "refused: " + d.status.Error
}

func (d *testCSIDriver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.name, VendorVersion: "0.0.1"}, nil
}

func (d *testCSIDriver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

// serveTestCSIDriver serves d's two sockets until the test ends, then
// removes them.
func serveTestCSIDriver(t *testing.T, d *testCSIDriver, regSocket string) {
	t.Helper()
	serve := func(path string, register func(*grpc.Server)) {
		_ = os.Remove(path)
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		register(s)
		go s.Serve(ln) //nolint:errcheck // ends with Stop below
		t.Cleanup(func() {
			s.Stop()
			_ = os.Remove(path)
		})
	}
	serve(d.endpoint, func(s *grpc.Server) {
		csi.RegisterIdentityServer(s, d)
		csi.RegisterNodeServer(s, d)
	})
	// The registration socket last: the kubelet's plugin watcher dials it
	// as soon as it appears.
	serve(regSocket, func(s *grpc.Server) { registerapi.RegisterRegistrationServer(s, d) })
}

// csiNodeDrivers returns the node IDs by driver name in the CSINode of
// node, or an error if there is none.
func csiNodeDrivers(ctx context.Context, n *harness.Node, node string) (map[string]string, error) {
	out, err := n.Kubectl(ctx, "get", "csinode", node, "-o", "json")
	if err != nil {
		return nil, err
	}
	var cn struct {
		Spec struct {
			Drivers []struct{ Name, NodeID string }
		}
	}
	if err := json.Unmarshal([]byte(out), &cn); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, d := range cn.Spec.Drivers {
		m[d.Name] = d.NodeID
	}
	return m, nil
}

// nodeName is the name of the one Node of n.
func nodeName(ctx context.Context, t *testing.T, n *harness.Node) string {
	t.Helper()
	out, err := n.Kubectl(ctx, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil || out == "" {
		t.Fatalf("node name: %q %v", out, err)
	}
	return out
}

// TestKubeletCSIOrdering: the controller manager's volume plugins
// initialise after the kubelet's (it starts once the kubelet has registered
// the node, and a stolen Lease makes it start again mid-run), which in one process overwrote the
// CSI plugin's package-level node info with an empty node name. The
// kubelet runs in a process of its own: the node stays Ready, has its
// CSINode, and a CSI driver registered through the kubelet's plugin
// registration socket after the re-campaign appears in the CSINode with
// its node ID.
func TestKubeletCSIOrdering(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env, "--test-controller-manager-after-node")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var node string

	harness.Phase(t, "start", func(t *testing.T) {
		n.Start()
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := n.WaitNodeReady(wctx); err != nil {
			t.Fatal(err)
		}
		node = nodeName(ctx, t, n)
		if _, err := csiNodeDrivers(ctx, n, node); err != nil {
			t.Fatalf("CSINode of %s: %v", node, err)
		}
	})

	harness.Phase(t, "re-campaign", func(t *testing.T) {
		// The controller manager loses its Lease (held by another for
		// longer than its renew deadline), stops, and campaigns again; its
		// new term initialises its volume plugins once more.
		terms := func() int { return logLines(t, n, "acquired the lease", "kube-system/kube-controller-manager") }
		before, begin := terms(), time.Now()
		stealLease(ctx, t, n, "kube-controller-manager", 20)
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer wcancel()
		if err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool { return terms() > before }); err != nil {
			t.Fatalf("controller manager did not start a new term: %v", err)
		}
		t.Logf("new term after %s", time.Since(begin).Round(100*time.Millisecond))
		// Give the new term time to start its controllers.
		time.Sleep(5 * time.Second)
	})

	harness.Phase(t, "register-driver", func(t *testing.T) {
		d := &testCSIDriver{name: "e2e.csi.kubox.test", nodeID: "e2e-node-" + node, endpoint: filepath.Join(n.Root, "csi.sock")}
		serveTestCSIDriver(t, d, filepath.Join(n.DataDir, "kubelet", "plugins_registry", d.name+"-reg.sock"))
		var drivers map[string]string
		var last error
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		err := harness.WaitFor(wctx, 500*time.Millisecond, func() bool {
			drivers, last = csiNodeDrivers(ctx, n, node)
			return drivers[d.name] == d.nodeID
		})
		if err != nil {
			t.Fatalf("driver %s not in CSINode %s with node ID %s: drivers %v (%v); the kubelet's registration status: %q",
				d.name, node, d.nodeID, drivers, last, d.registration())
		}
		if r := d.registration(); r != "registered" {
			t.Errorf("kubelet reported the registration as %q", r)
		}
	})

	harness.Phase(t, "still-ready", func(t *testing.T) {
		out, err := n.Kubectl(ctx, "get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || out != "True" {
			t.Fatalf("node %s Ready=%q (%v)", node, out, err)
		}
		if exited, err := n.Exited(); exited {
			t.Fatalf("kubox exited: %v", err)
		}
	})
}

// TestKubeletPortTakenAfterPreflight: the kubelet's port is free at
// kubox's preflight and taken before the kubelet binds it. The kubelet
// exits (upstream calls os.Exit there); kubox stops everything cleanly,
// etcd included, and exits non-zero with a last line naming the kubelet
// and the cause. Started again with the port free, it reaches Ready with
// what was written before.
func TestKubeletPortTakenAfterPreflight(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	harness.Phase(t, "write", func(t *testing.T) {
		n.Start()
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := n.WaitNodeReady(wctx); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "create", "configmap", "before-port-clash", "--from-literal=k=v"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	var port net.Listener
	harness.Phase(t, "port-taken", func(t *testing.T) {
		logStart := logLines(t, n)
		n.Start()
		// Once etcd serves, the preflight is long past and the kubelet
		// (after the apiserver and containerd) has not started.
		err := harness.WaitFor(ctx, 50*time.Millisecond, func() bool {
			return logLinesSince(t, n, logStart, "component ready", "component=etcd") > 0
		})
		if err != nil {
			t.Fatal(err)
		}
		port, err = net.Listen("tcp", ":10250")
		if err != nil {
			t.Fatalf("take the kubelet port: %v", err)
		}
		t.Cleanup(func() { port.Close() })
		exited, exitErr := n.WaitExit(3 * time.Minute)
		if !exited {
			t.Fatal("kubox still runs 3 minutes after its kubelet's port was taken")
		}
		if exitErr == nil {
			t.Fatal("kubox exited 0; want a non-zero exit")
		}
		data, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		last := lastLine(string(data))
		t.Logf("exit: %v; last line: %s", exitErr, last)
		if !strings.HasPrefix(last, "kubox: ") || !strings.Contains(last, "kubelet") || !strings.Contains(last, "address already in use") {
			t.Errorf("last line %q does not name the kubelet and the cause", last)
		}
		if logLinesSince(t, n, logStart, "component stopped", "component=etcd") == 0 {
			t.Error("etcd was not stopped cleanly")
		}
	})

	harness.Phase(t, "restart", func(t *testing.T) {
		port.Close()
		begin := time.Now()
		n.Start()
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := n.WaitNodeReadyFast(wctx, begin); err != nil {
			t.Fatal(err)
		}
		out, err := n.Kubectl(ctx, "get", "configmap", "before-port-clash", "-o", "jsonpath={.data.k}")
		if err != nil || out != "v" {
			t.Fatalf("ConfigMap written before: %q %v", out, err)
		}
	})

	harness.Phase(t, "kill-9", func(t *testing.T) {
		// SIGKILL to kubox alone: its kubelet child gets its parent-death
		// signal and ends too.
		kubelet := "kubelet\x00--config\x00" + n.DataDir + "/"
		if len(harness.ProcessesMentioning(kubelet)) != 1 {
			t.Fatalf("want one kubelet child, got %v", harness.ProcessesMentioning(kubelet))
		}
		if err := syscall.Kill(n.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n.WaitExit(10 * time.Second)
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if err := harness.WaitFor(wctx, 100*time.Millisecond, func() bool { return len(harness.ProcessesMentioning(kubelet)) == 0 }); err != nil {
			t.Fatalf("kubelet child %v still runs after kubox was killed", harness.ProcessesMentioning(kubelet))
		}
	})
}

// logLinesSince counts the node's log lines after the first skip that
// contain every word.
func logLinesSince(t *testing.T, n *harness.Node, skip int, words ...string) int {
	t.Helper()
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	if skip > len(lines) {
		return 0
	}
	count := 0
	for _, l := range lines[skip:] {
		if containsAll(l, words...) {
			count++
		}
	}
	return count
}
