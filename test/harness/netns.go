package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Network is a set of network namespaces, one per "host", joined by a
// bridge that lives in a namespace of its own: several kubox boxes on one
// machine, with nothing added to the host's own network.
type Network struct {
	Namespaces []string // one per host
	IPs        []string // each host's address on the bridge
	Prefix     string
	// Router, in a network from NewRoutedNetwork, is the namespace that
	// forwards between the subnets; Gateways are its addresses, one per
	// host, on that host's subnet.
	Router   string
	Gateways []string
}

// NewNetwork creates n hosts named <prefix>-1..n on subnet 10.99.0.0/24
// (host i gets 10.99.0.i) and removes them all when the test ends.
func NewNetwork(tb testing.TB, prefix string, n int) *Network {
	tb.Helper()
	net := &Network{Prefix: prefix}
	sw := prefix + "-sw"
	tb.Cleanup(func() { net.Delete(tb) })
	net.Delete(tb) // leftovers of an interrupted run
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", sw)
	run("-n", sw, "link", "add", "br0", "type", "bridge")
	run("-n", sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		ip := fmt.Sprintf("10.99.0.%d", i)
		run("netns", "add", ns)
		run("-n", ns, "link", "set", "lo", "up")
		port := fmt.Sprintf("p%d", i)
		run("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", sw)
		run("-n", sw, "link", "set", port, "master", "br0")
		run("-n", sw, "link", "set", port, "up")
		run("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		run("-n", ns, "link", "set", "eth0", "up")
		run("-n", ns, "route", "add", "default", "dev", "eth0")
		net.Namespaces = append(net.Namespaces, ns)
		net.IPs = append(net.IPs, ip)
	}
	return net
}

// NewRoutedNetwork creates hosts <prefix>-1..n on separate subnets joined
// by a router, namespace <prefix>-rt: host i is on subnet subnets[i-1]
// (10.99.<s>.0/24, the host's address 10.99.<s>.<i>), each subnet is a
// bridge in the router's namespace whose address 10.99.<s>.254 is the
// hosts' default gateway, and the router forwards between them. No host is
// on-link with a host of another subnet. Everything is removed when the
// test ends.
func NewRoutedNetwork(tb testing.TB, prefix string, subnets ...int) *Network {
	tb.Helper()
	net := &Network{Prefix: prefix, Router: prefix + "-rt"}
	tb.Cleanup(func() { net.Delete(tb) })
	net.Delete(tb)
	run := func(args ...string) {
		tb.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	rt := net.Router
	run("netns", "add", rt)
	run("-n", rt, "link", "set", "lo", "up")
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+rt, "--", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput(); err != nil {
		tb.Fatalf("enable forwarding in %s: %v: %s", rt, err, out)
	}
	made := map[int]bool{}
	for i, s := range subnets {
		if s < 1 || s > 253 {
			tb.Fatalf("subnet %d: want 1-253", s)
		}
		br, gw := fmt.Sprintf("br%d", s), fmt.Sprintf("10.99.%d.254", s)
		if !made[s] {
			made[s] = true
			run("-n", rt, "link", "add", br, "type", "bridge")
			run("-n", rt, "addr", "add", gw+"/24", "dev", br)
			run("-n", rt, "link", "set", br, "up")
		}
		ns := fmt.Sprintf("%s-%d", prefix, i+1)
		ip := fmt.Sprintf("10.99.%d.%d", s, i+1)
		port := fmt.Sprintf("p%d", i+1)
		run("netns", "add", ns)
		run("-n", ns, "link", "set", "lo", "up")
		run("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", rt)
		run("-n", rt, "link", "set", port, "master", br)
		run("-n", rt, "link", "set", port, "up")
		run("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		run("-n", ns, "link", "set", "eth0", "up")
		run("-n", ns, "route", "add", "default", "via", gw)
		net.Namespaces = append(net.Namespaces, ns)
		net.IPs = append(net.IPs, ip)
		net.Gateways = append(net.Gateways, gw)
	}
	return net
}

// Listen opens a TCP listener inside network namespace ns (the socket
// stays there; accept from any goroutine). It is closed when the test ends.
func Listen(tb testing.TB, ns, addr string) net.Listener {
	tb.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	res := make(chan result, 1)
	go func() {
		// Never unlocked: the runtime discards the thread, still in ns,
		// when this goroutine ends.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res <- result{nil, err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			res <- result{nil, err}
			return
		}
		l, err := net.Listen("tcp", addr)
		res <- result{l, err}
	}()
	r := <-res
	if r.err != nil {
		tb.Fatalf("listen on %s in netns %s: %v", addr, ns, r.err)
	}
	tb.Cleanup(func() { r.l.Close() })
	return r.l
}

// Delete removes every namespace of the network (and with them their links).
func (n *Network) Delete(tb testing.TB) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], n.Prefix+"-") {
			continue
		}
		for _, pid := range netnsPids(f[0]) {
			killPid(pid)
		}
		if out, err := exec.Command("ip", "netns", "delete", f[0]).CombinedOutput(); err != nil {
			tb.Errorf("cleanup: ip netns delete %s: %v: %s", f[0], err, out)
		}
	}
}

func netnsPids(ns string) []int {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var pid int
		// Never the test process itself: it is listed when the thread that
		// entered the namespace (DialContext, Listen) was its main thread,
		// which the runtime parks in the namespace instead of ending.
		if _, err := fmt.Sscan(f, &pid); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killPid(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }

// DialContext returns a dialer whose connections are made inside network
// namespace ns, for clients in the test process (which stays in the host's
// namespace): one goroutine, locked to a thread that entered ns, makes every
// socket; the connections then work from any goroutine.
func DialContext(tb testing.TB, ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	tb.Helper()
	type result struct {
		conn net.Conn
		err  error
	}
	type request struct {
		ctx           context.Context
		network, addr string
		res           chan result
	}
	reqs := make(chan request)
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace, so when this
		// goroutine ends the runtime discards the thread.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		ready <- err
		if err != nil {
			return
		}
		for r := range reqs {
			var d net.Dialer
			c, err := d.DialContext(r.ctx, r.network, r.addr)
			r.res <- result{c, err}
		}
	}()
	if err := <-ready; err != nil {
		tb.Fatalf("enter netns %s: %v", ns, err)
	}
	tb.Cleanup(func() { close(reqs) })
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		r := request{ctx, network, addr, make(chan result, 1)}
		select {
		case reqs <- r:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		res := <-r.res
		return res.conn, res.err
	}
}
