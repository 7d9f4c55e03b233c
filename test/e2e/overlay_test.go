package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// overlayPods: a web server on box2 that also serves a 4 MiB file (for
// full-size segments through the overlay), and a client on box1.
const overlayPods = `apiVersion: v1
kind: Pod
metadata: {name: web-far, namespace: default}
spec:
  nodeName: box2
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /tmp/www && cp /www/index.html /tmp/www/ && busybox dd if=/dev/zero of=/tmp/www/big bs=1024 count=4096 && exec httpd -f -p 8080 -h /tmp/www"]
    ports: [{containerPort: 8080, hostPort: 8088}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client-near, namespace: default}
spec:
  nodeName: box1
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
`

// TestPodNetworkAcrossSubnets runs two boxes on different subnets (network
// namespaces on two bridges joined by a router namespace), box2 joined to
// box1, and checks the pod network between them: box1 reaches box2's pods
// through the VXLAN device kubox made (the boxes share no subnet), a 4 MiB
// response comes through whole (the overlay's MTU), the server pod sees the
// client pod's own IP (no NAT between pods), a pod reaching an address
// outside the cluster (the router) is seen with its node's IP (masqueraded),
// the server pod's host port answers the router, and a clean stop removes
// the device, the routes and the masquerade table.
func TestPodNetworkAcrossSubnets(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	network := harness.NewRoutedNetwork(t, "kbxovl", 1, 2)
	ns, ip := network.Namespaces, network.IPs
	// "Outside the cluster": an address of the router, on box2's subnet.
	outside := harness.Listen(t, network.Router, net.JoinHostPort(network.Gateways[1], "9000"))

	box1 := harness.NewNode(t, env, boxArgs("box1", ip[0], cgroupRoot("box1"))...)
	box1.Netns = ns[0]
	var tok string
	harness.Phase(t, "box1-ready", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
		tok = createToken(ctx, t, box1, "1h")
	})
	box2 := harness.NewNode(t, env, boxArgs("box2", ip[1], cgroupRoot("box2"), "--join", "https://"+net.JoinHostPort(ip[0], "6443"))...)
	box2.Netns = ns[1]
	// Runs first among the cleanups: no kubelet may still run while the
	// boxes' host cleanups remove pod cgroups.
	t.Cleanup(func() {
		box2.Kill()
		box1.Kill()
	})
	harness.Phase(t, "box2-joins", func(t *testing.T) {
		box2.Env = []string{"KUBOX_TOKEN=" + tok}
		startBox(ctx, t, box2)
		waitNodesReady(ctx, t, box1, "box1=True box2=True")
	})

	var webIP, clientIP string
	harness.Phase(t, "pods", func(t *testing.T) {
		for _, n := range []*harness.Node{box1, box2} {
			if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
				t.Fatal(err)
			}
		}
		applyWebAndClient(ctx, t, box1, overlayPods)
		webIP = podIP(ctx, t, box1, "web-far")
		clientIP = podIP(ctx, t, box1, "client-near")
	})

	harness.Phase(t, "vxlan-route", func(t *testing.T) {
		// The path: box1 routes box2's pod CIDR through kubox-vxlan.
		routes := inNetns(t, ns[0], "ip", "route", "show", "proto", "0x4b")
		link := inNetns(t, ns[0], "ip", "-d", "link", "show", "kubox-vxlan")
		t.Logf("box1's pod routes:\n%s", routes)
		if !strings.Contains(routes, "dev kubox-vxlan") || !strings.Contains(link, "vxlan id 4242") || !strings.Contains(link, "mtu 1450") {
			t.Fatalf("box1 should route box2's pods through kubox-vxlan (VNI 4242, MTU 1500-50):\nroutes: %s\nlink: %s", routes, link)
		}
	})

	harness.Phase(t, "pod-to-pod", func(t *testing.T) {
		// Pod to pod across the subnets, by pod IP.
		out, err := box1.Kubectl(ctx, "exec", "client-near", "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 `+webIP+` 8080`)
		if err != nil || !strings.Contains(out, "kubox-test ok") {
			t.Fatalf("pod on box1 fetching http://%s:8080/ on box2: %q %v", webIP, out, err)
		}
		// No NAT between pods: the server sees the client pod's address.
		assertPeer(ctx, t, box1, "client-near", "web-far", webIP, 8080, clientIP, ip[0])
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("pod %s on box1 reached pod %s on box2 through VXLAN, seen with its own IP", clientIP, webIP)
	})

	harness.Phase(t, "4MiB-through-vxlan", func(t *testing.T) {
		// Full-size segments from box2's pod: 4 MiB through the overlay.
		begin := time.Now()
		out, err := box1.Kubectl(ctx, "exec", "client-near", "--", "sh", "-c",
			`printf 'GET /big HTTP/1.0\r\n\r\n' | nc -w 10 `+webIP+` 8080 | busybox wc -c`)
		got, _ := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || got < 4<<20 {
			t.Fatalf("4 MiB from pod %s through VXLAN: got %q bytes, %v", webIP, strings.TrimSpace(out), err)
		}
		t.Logf("4 MiB (%d bytes with headers) from box2's pod through VXLAN in %s", got, time.Since(begin).Round(time.Millisecond))
	})

	harness.Phase(t, "outside-masqueraded", func(t *testing.T) {
		// Outside the cluster: masqueraded to box1's node IP.
		seen := make(chan string, 1)
		go func() {
			outside.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
			c, err := outside.Accept()
			if err != nil {
				seen <- "accept: " + err.Error()
				return
			}
			defer c.Close()
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "outside ok\n")
			seen <- host
		}()
		out, err := box1.Kubectl(ctx, "exec", "client-near", "--", "sh", "-c", "echo hi | nc -w 5 "+network.Gateways[1]+" 9000")
		src := <-seen
		if err != nil || !strings.Contains(out, "outside ok") || src != ip[0] {
			t.Fatalf("pod on box1 to %s:9000 (outside the cluster): %q %v; seen from %s, want box1's node IP %s (masqueraded)",
				network.Gateways[1], out, err, src, ip[0])
		}
		t.Logf("pod on box1 reached %s outside the cluster, seen from node IP %s", network.Gateways[1], src)
	})

	harness.Phase(t, "host-port", func(t *testing.T) {
		// The host port (portmap plugin) still works, from outside the cluster.
		dial := harness.DialContext(t, network.Router)
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := dial(dctx, "tcp", net.JoinHostPort(ip[1], "8088"))
		dcancel()
		if err != nil {
			t.Fatalf("host port %s:8088 of web-far from the router: %v", ip[1], err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		body, err := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(body), "kubox-test ok") {
			t.Fatalf("host port %s:8088 of web-far from the router: %q %v", ip[1], body, err)
		}
	})

	harness.Phase(t, "masquerade-table-rewritten", func(t *testing.T) {
		// The masquerade table comes back when something removes it (a
		// firewall reload).
		inNetns(t, ns[0], "nft", "delete", "table", "ip", "kubox")
		begin := time.Now()
		for exec.Command("nsenter", "--net=/run/netns/"+ns[0], "--", "nft", "list", "table", "ip", "kubox").Run() != nil {
			if time.Since(begin) > 45*time.Second {
				t.Fatalf("box1's masquerade table was not written again within 45s of its removal")
			}
			time.Sleep(time.Second)
		}
		t.Logf("box1's masquerade table was back %s after its removal", time.Since(begin).Round(time.Second))
	})

	harness.Phase(t, "box2-stop-cleans-up", func(t *testing.T) {
		// A clean stop of box2 removes its overlay device, pod routes and
		// masquerade table.
		if _, err := box2.Stop(40 * time.Second); err != nil {
			t.Fatalf("stop box2: %v", err)
		}
		if out, err := exec.Command("ip", "-n", ns[1], "link", "show", "kubox-vxlan").CombinedOutput(); err == nil {
			t.Errorf("box2 stopped, its kubox-vxlan is still there: %s", out)
		}
		if out := inNetns(t, ns[1], "ip", "route", "show", "proto", "0x4b"); strings.TrimSpace(out) != "" {
			t.Errorf("box2 stopped, its pod routes are still there: %s", out)
		}
		if out, err := exec.Command("nsenter", "--net=/run/netns/"+ns[1], "--", "nft", "list", "table", "ip", "kubox").CombinedOutput(); err == nil {
			t.Errorf("box2 stopped, its masquerade table is still there: %s", out)
		}
	})
}

// waitNodesReady waits up to two minutes for `kubectl get nodes` through n
// to show want ("box1=True box2=True").
func waitNodesReady(ctx context.Context, t *testing.T, n *harness.Node, want string) {
	t.Helper()
	var out string
	var err error
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err = n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if err == nil && strings.TrimSpace(out) == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if strings.TrimSpace(out) != want {
		t.Fatalf("kubectl get nodes: %v %q, want %s", err, out, want)
	}
}

func podIP(ctx context.Context, t *testing.T, n *harness.Node, pod string) string {
	t.Helper()
	ip, err := n.Kubectl(ctx, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
	if err != nil || net.ParseIP(ip) == nil {
		t.Fatalf("IP of pod %s: %q %v", pod, ip, err)
	}
	return ip
}

// inNetns runs a command in network namespace ns and returns its output.
func inNetns(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(argv, " "), ns, err, out)
	}
	return string(out)
}

// assertPeer opens a connection from pod client to port on pod server
// (serverIP), held open for 3 s, and checks with netstat inside server that
// it came from want, not from notWant (the client's node: NAT between pods).
func assertPeer(ctx context.Context, t *testing.T, n *harness.Node, client, server, serverIP string, port int, want, notWant string) {
	t.Helper()
	// nc holds the connection until sleep closes its stdin; meanwhile
	// netstat looks at it from the server's side.
	held := make(chan error, 1)
	go func() {
		_, err := n.Kubectl(ctx, "exec", client, "--", "sh", "-c", fmt.Sprintf("sleep 4 | nc %s %d >/dev/null", serverIP, port))
		held <- err
	}()
	defer func() {
		if err := <-held; err != nil {
			t.Errorf("client pod %s: %v", client, err)
		}
	}()
	var peers []string
	var out string
	for try := 0; try < 15 && len(peers) == 0; try++ {
		var err error
		if out, err = n.Kubectl(ctx, "exec", server, "--", "busybox", "netstat", "-tn"); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 6 || f[0] != "tcp" || f[5] != "ESTABLISHED" || !strings.HasSuffix(f[3], ":"+strconv.Itoa(port)) {
				continue
			}
			// 10.42.0.2:41234, or ::ffff:10.42.0.2:41234 on a v6 socket.
			if i := strings.LastIndex(f[4], ":"); i > 0 {
				peers = append(peers, strings.TrimPrefix(f[4][:i], "::ffff:"))
			}
		}
		if len(peers) == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	found := false
	for _, p := range peers {
		found = found || p == want
		if p == notWant {
			t.Errorf("pod %s saw a connection from %s (the client's node: NAT between pods)", server, p)
		}
	}
	if !found {
		t.Errorf("pod %s saw connections to port %d from %v, want the client pod's IP %s:\n%s", server, port, peers, want, out)
	}
}
