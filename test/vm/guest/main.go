// Command guest runs inside the IPVS test VM (see test/vm): it runs kubox's
// service proxy, fed from a fake clientset, against the VM's real kernel
// IPVS, then checks the kernel's IPVS table and sends TCP traffic to the
// Services, which backends in network namespaces answer. Each check prints
// one "KUBOX-VM PASS|FAIL name: detail" line on the console; the test on
// the host reads them. With kubox.test=bench on the kernel command line it
// prints benchmark figures instead.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/proxy/mode"
	"github.com/kubox/kubox/test/vm/scenario"
)

var (
	nodeIP      = net.IPv4(172, 30, 0, 1)
	clusterCIDR = &net.IPNet{IP: net.IPv4(10, 244, 0, 0), Mask: net.CIDRMask(16, 32)}
	webIP       = net.IPv4(10, 96, 0, 10)
	stickyIP    = net.IPv4(10, 96, 0, 11)
)

const nodePort = 30080

func main() {
	klog.SetOutput(io.Discard) // upstream's logs would drown the result lines
	klog.LogToStderr(false)
	cmdline, _ := os.ReadFile("/proc/cmdline")
	test := "ipvs"
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "kubox.test="); ok {
			test = v
		}
	}
	r := &reporter{}
	switch test {
	case "bench":
		bench(r)
	default:
		ipvsTest(r)
	}
	fmt.Println("KUBOX-VM-DONE")
}

type reporter struct{ failed int }

func (r *reporter) check(name string, ok bool, format string, args ...any) bool {
	status := "PASS"
	if !ok {
		status = "FAIL"
		r.failed++
	}
	fmt.Printf("KUBOX-VM %s %s: %s\n", status, name, fmt.Sprintf(format, args...))
	return ok
}

func (r *reporter) fatal(name string, err error) {
	r.check(name, false, "%v", err)
	fmt.Println("KUBOX-VM-DONE")
	os.Exit(1)
}

// backend is a TCP server in its own network namespace that answers every
// connection with its name.
type backend struct {
	name string
	ip   net.IP
	ns   netns.NsHandle
}

// newNetns makes a network namespace linked to the root one by a veth
// pair: root side 10.244.<i>.1/24, namespace side 10.244.<i>.2/24, routed
// (no bridge), so all Service traffic passes the root namespace's IPVS.
// With listen, it serves TCP 8080 there.
func newNetns(name string, i int, listen bool) (*backend, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	ns, err := netns.New() // this thread is now in ns
	if err != nil {
		return nil, err
	}
	var l net.Listener
	if listen {
		l, err = net.Listen("tcp4", ":8080") // the socket stays in ns
	}
	if serr := netns.Set(orig); serr != nil {
		return nil, serr
	}
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, ip: net.IPv4(10, 244, byte(i), 2), ns: ns}
	host, peer := "h"+name, "p"+name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer}); err != nil {
		return nil, fmt.Errorf("veth %s: %w", host, err)
	}
	hl, err := netlink.LinkByName(host)
	if err != nil {
		return nil, err
	}
	pl, err := netlink.LinkByName(peer)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetNsFd(pl, int(ns)); err != nil {
		return nil, err
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 244, byte(i), 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	pl, err = h.LinkByName(peer)
	if err != nil {
		return nil, err
	}
	if err := h.AddrAdd(pl, &netlink.Addr{IPNet: &net.IPNet{IP: b.ip, Mask: net.CIDRMask(24, 32)}}); err != nil {
		return nil, err
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	for _, link := range []netlink.Link{lo, pl} {
		if err := h.LinkSetUp(link); err != nil {
			return nil, err
		}
	}
	if err := h.RouteAdd(&netlink.Route{Gw: net.IPv4(10, 244, byte(i), 1), LinkIndex: pl.Attrs().Index}); err != nil {
		return nil, fmt.Errorf("default route in %s: %w", name, err)
	}
	if listen {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", name)
				c.Close()
			}
		}()
	}
	return b, nil
}

// ask connects to addr (from ns, or the root namespace when ns is -1) and
// returns the backend's name.
func ask(ns netns.NsHandle, addr string) (string, error) {
	var conn net.Conn
	var err error
	dial := func() { conn, err = net.DialTimeout("tcp4", addr, 3*time.Second) }
	if ns == -1 {
		dial()
	} else {
		runtime.LockOSThread()
		orig, gerr := netns.Get()
		if gerr != nil {
			runtime.UnlockOSThread()
			return "", gerr
		}
		if serr := netns.Set(ns); serr != nil {
			orig.Close()
			runtime.UnlockOSThread()
			return "", serr
		}
		dial() // the socket is made in ns
		_ = netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// spread asks n times and counts answers per backend.
func spread(ns netns.NsHandle, addr string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := ask(ns, addr)
		if err != nil {
			return seen, fmt.Errorf("connection %d to %s: %w", i+1, addr, err)
		}
		seen[name]++
	}
	return seen, nil
}

// virtualServer is one entry of /proc/net/ip_vs.
type virtualServer struct {
	scheduler string
	flags     string
	reals     map[string]int // ip:port -> weight
}

// ipvsTable reads the kernel's IPVS table from /proc/net/ip_vs, a view
// independent of the netlink library the proxier programs it with.
func ipvsTable() (map[string]*virtualServer, error) {
	data, err := os.ReadFile("/proc/net/ip_vs")
	if err != nil {
		return nil, err
	}
	table := map[string]*virtualServer{}
	var cur *virtualServer
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP"):
			cur = &virtualServer{scheduler: f[2], flags: strings.Join(f[3:], " "), reals: map[string]int{}}
			table[f[0]+" "+hexAddr(f[1])] = cur
		case len(f) >= 4 && f[0] == "->" && cur != nil && f[1] != "RemoteAddress:Port":
			w, _ := strconv.Atoi(f[3])
			cur.reals[hexAddr(f[1])] = w
		}
	}
	return table, nil
}

// hexAddr turns 0A60000A:0050 into 10.96.0.10:80.
func hexAddr(s string) string {
	ipHex, portHex, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(ipHex)
	if !ok || err != nil || len(b) != 4 {
		return s
	}
	port, _ := strconv.ParseUint(portHex, 16, 16)
	return fmt.Sprintf("%s:%d", net.IP(b), port)
}

// persistenceTimeout reads a virtual server's persistence timeout through
// IPVS netlink.
func persistenceTimeout(ip net.IP, port uint16) (uint32, error) {
	h, err := ipvs.New("")
	if err != nil {
		return 0, err
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return 0, err
	}
	for _, s := range svcs {
		if s.Address.Equal(ip) && s.Port == port {
			return s.Timeout, nil
		}
	}
	return 0, fmt.Errorf("no virtual server %s:%d", ip, port)
}

func realsOf(vs *virtualServer) string {
	var out []string
	for r, w := range vs.reals {
		out = append(out, fmt.Sprintf("%s(w%d)", r, w))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// waitTable polls the IPVS table until cond holds or 60 s pass.
func waitTable(cond func(map[string]*virtualServer) bool) (map[string]*virtualServer, time.Duration, bool) {
	begin := time.Now()
	for {
		t, err := ipvsTable()
		if err == nil && cond(t) {
			return t, time.Since(begin), true
		}
		if time.Since(begin) > 60*time.Second {
			return t, time.Since(begin), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nodeSetup() error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "node0"}}); err != nil {
		return fmt.Errorf("node link: %w", err)
	}
	l, err := netlink.LinkByName("node0")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
}

func newProxy(client *fake.Clientset, m mode.Mode, scheduler string, minSync time.Duration) *proxy.Proxy {
	return proxy.New(proxy.Config{
		Mode: m, Scheduler: scheduler, NodeName: "vm", NodeIP: nodeIP, ClusterCIDR: clusterCIDR,
		Client: client, MinSyncPeriod: minSync, CleanupOnStop: true,
		Log: slog.New(slog.NewTextHandler(os.Stdout, nil)),
	})
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

func ipvsTest(r *reporter) {
	ctx := context.Background()
	if err := nodeSetup(); err != nil {
		r.fatal("setup", err)
	}
	var bes []*backend
	for i := 1; i <= 3; i++ {
		b, err := newNetns(fmt.Sprintf("be%d", i), i, true)
		if err != nil {
			r.fatal("setup", err)
		}
		bes = append(bes, b)
	}
	client, err := newNetns("client", 9, false)
	if err != nil {
		r.fatal("setup", err)
	}
	var ips []net.IP
	for _, b := range bes {
		ips = append(ips, b.ip)
	}
	web := scenario.Service("web", webIP, 80, 8080)
	web.Spec.Type = corev1.ServiceTypeNodePort
	web.Spec.Ports[0].NodePort = nodePort
	sticky := scenario.Service("sticky", stickyIP, 80, 8080)
	sticky.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	sticky.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
	objs := []k8sruntime.Object{scenario.Node("vm", nodeIP), web, scenario.Slice("web", 8080, ips...), sticky, scenario.Slice("sticky", 8080, ips...)}
	fc := fake.NewClientset(objs...)

	// auto picks IPVS on this kernel, and says why.
	p := newProxy(fc, mode.Auto, "", time.Second)
	if err := p.Init(ctx); err != nil {
		r.fatal("mode-auto", err)
	}
	r.check("mode-auto", p.Choice().Mode == mode.IPVS && p.Choice().Reason == "/proc/net/ip_vs present, with the rr scheduler", "%s", p.Choice())
	begin := time.Now()
	if err := p.Start(ctx); err != nil {
		r.fatal("start", err)
	}
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = p.Ready(readyCtx)
	cancel()
	if err != nil {
		r.fatal("ready", err)
	}
	r.check("ready", true, "first sync after %s", time.Since(begin).Round(time.Millisecond))

	webVS, stickyVS, npVS := "TCP 10.96.0.10:80", "TCP 10.96.0.11:80", fmt.Sprintf("TCP %s:%d", nodeIP, nodePort)
	want3 := func(vs *virtualServer) bool {
		if vs == nil || len(vs.reals) != 3 {
			return false
		}
		for _, ip := range ips {
			if vs.reals[ip.String()+":8080"] != 1 {
				return false
			}
		}
		return true
	}
	t, _, ok := waitTable(func(t map[string]*virtualServer) bool {
		return want3(t[webVS]) && want3(t[stickyVS]) && want3(t[npVS])
	})
	if !ok {
		r.fatal("ipvs-table", fmt.Errorf("want 3 real servers for %s, %s, %s; /proc/net/ip_vs:\n%s", webVS, stickyVS, npVS, run("cat", "/proc/net/ip_vs")))
	}
	r.check("ipvs-clusterip", t[webVS].scheduler == "rr" && t[webVS].flags == "", "%s sched %s flags %q reals %s", webVS, t[webVS].scheduler, t[webVS].flags, realsOf(t[webVS]))
	r.check("ipvs-nodeport", t[npVS].scheduler == "rr", "%s sched %s reals %s", npVS, t[npVS].scheduler, realsOf(t[npVS]))
	// /proc/net/ip_vs shows the persistence timeout in jiffies; netlink
	// gives it in seconds.
	timeout, terr := persistenceTimeout(stickyIP, 80)
	r.check("ipvs-affinity-persistence", strings.HasPrefix(t[stickyVS].flags, "persistent ") && strings.HasSuffix(t[stickyVS].flags, " FFFFFFFF") && timeout == 600 && !strings.HasPrefix(t[webVS].flags, "persistent"),
		"%s flags %q, timeout %d s %v (ClientIP affinity, timeoutSeconds 600)", stickyVS, t[stickyVS].flags, timeout, terr)
	addrs := run("ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0")
	r.check("kube-ipvs0", strings.Contains(addrs, "10.96.0.10/32") && strings.Contains(addrs, "10.96.0.11/32"), "%s", strings.Join(strings.Fields(addrs), " "))
	sets := run("ipset", "list", "KUBE-CLUSTER-IP")
	r.check("ipset-cluster-ip", strings.Contains(sets, "10.96.0.10,tcp:80") && strings.Contains(sets, "10.96.0.11,tcp:80"), "KUBE-CLUSTER-IP has both ClusterIPs")

	// Real TCP traffic through the kernel's IPVS to the namespaces.
	rootNS := netns.NsHandle(-1)
	seen, err := spread(rootNS, "10.96.0.10:80", 30)
	r.check("traffic-clusterip-from-node", err == nil && len(seen) == 3, "30 connections: %v %v", seen, err)
	seen, err = spread(client.ns, "10.96.0.10:80", 30)
	r.check("traffic-clusterip-from-pod", err == nil && len(seen) == 3, "30 connections from a pod namespace: %v %v", seen, err)
	seen, err = spread(client.ns, fmt.Sprintf("%s:%d", nodeIP, nodePort), 12)
	r.check("traffic-nodeport", err == nil && len(seen) == 3, "12 connections to the NodePort: %v %v", seen, err)
	seen, err = spread(client.ns, "10.96.0.11:80", 12)
	r.check("traffic-affinity", err == nil && len(seen) == 1, "12 connections with ClientIP affinity reach one backend: %v %v", seen, err)

	// One backend goes: it leaves the table (or is drained at weight 0)
	// and gets no new connections.
	changed := scenario.Slice("web", 8080, ips[0], ips[1])
	begin = time.Now()
	if _, err := fc.DiscoveryV1().EndpointSlices("default").Update(ctx, changed, metav1.UpdateOptions{}); err != nil {
		r.fatal("endpoint-change", err)
	}
	gone := ips[2].String() + ":8080"
	t, took, ok := waitTable(func(t map[string]*virtualServer) bool {
		vs := t[webVS]
		w, present := vs.reals[gone]
		return vs != nil && (!present || w == 0)
	})
	r.check("endpoint-removed", ok, "%s left %s (or weight 0) after %s: %s", gone, webVS, took.Round(time.Millisecond), realsOf(t[webVS]))
	seen, err = spread(rootNS, "10.96.0.10:80", 20)
	r.check("traffic-after-endpoint-removed", err == nil && seen["be3"] == 0 && len(seen) == 2, "20 connections: %v %v", seen, err)

	// Deleting a Service removes its virtual server and address.
	if err := fc.CoreV1().Services("default").Delete(ctx, "sticky", metav1.DeleteOptions{}); err != nil {
		r.fatal("service-delete", err)
	}
	_, took, ok = waitTable(func(t map[string]*virtualServer) bool { return t[stickyVS] == nil })
	addrs = run("ip", "-4", "-o", "addr", "show", "dev", "kube-ipvs0")
	r.check("service-deleted", ok && !strings.Contains(addrs, "10.96.0.11/"), "virtual server gone after %s; kube-ipvs0: %s", took.Round(time.Millisecond), strings.Join(strings.Fields(addrs), " "))

	// Stop with cleanup: nothing of the proxy is left in the kernel.
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = p.Stop(stopCtx)
	cancel()
	r.check("stop", err == nil, "stop with cleanup: %v", err)
	checkClean(r, "cleanup")

	// The same Services with the sh scheduler, forced.
	fc2 := fake.NewClientset(scenario.Node("vm", nodeIP), scenario.Service("web", webIP, 80, 8080), scenario.Slice("web", 8080, ips...))
	p = newProxy(fc2, mode.IPVS, "sh", time.Second)
	if err := p.Init(ctx); err != nil {
		r.fatal("mode-forced-sh", err)
	}
	if err := p.Start(ctx); err != nil {
		r.fatal("start-sh", err)
	}
	readyCtx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	err = p.Ready(readyCtx)
	cancel()
	if err != nil {
		r.fatal("ready-sh", err)
	}
	t, _, ok = waitTable(func(t map[string]*virtualServer) bool { return want3(t[webVS]) })
	r.check("ipvs-scheduler-sh", ok && t[webVS].scheduler == "sh", "%s sched %s reals %s", webVS, t[webVS].scheduler, realsOf(t[webVS]))
	seen, err = spread(client.ns, "10.96.0.10:80", 10)
	r.check("traffic-sh", err == nil && len(seen) == 1, "source hashing: 10 connections from one pod address reach one backend: %v %v", seen, err)
	stopCtx, cancel = context.WithTimeout(ctx, time.Minute)
	err = p.Stop(stopCtx)
	cancel()
	r.check("stop-sh", err == nil, "%v", err)
	checkClean(r, "cleanup-sh")
}

// checkClean asserts the proxy left nothing in the kernel: no virtual
// server, no kube-ipvs0, no KUBE- ipset, no KUBE- iptables chain.
func checkClean(r *reporter, name string) {
	t, err := ipvsTable()
	var left []string
	for vs := range t {
		left = append(left, vs)
	}
	if err != nil {
		left = append(left, err.Error())
	}
	if _, err := netlink.LinkByName("kube-ipvs0"); err == nil {
		left = append(left, "link kube-ipvs0")
	}
	if sets := run("ipset", "list", "-n"); strings.Contains(sets, "KUBE-") {
		left = append(left, "ipsets: "+strings.Join(strings.Fields(sets), " "))
	}
	for _, table := range []string{"nat", "filter"} {
		out := run("iptables-save", "-t", table)
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, ":KUBE-") || strings.HasPrefix(l, "-A") && strings.Contains(l, "KUBE-") {
				left = append(left, table+": "+l)
			}
		}
	}
	r.check(name, len(left) == 0, "left after stop: %v", left)
}

func bench(r *reporter) {
	ctx := context.Background()
	if err := nodeSetup(); err != nil {
		r.fatal("setup", err)
	}
	const services, endpoints = 1000, 10
	objs := append([]k8sruntime.Object{scenario.Node("vm", nodeIP)}, scenario.Load(services, endpoints)...)
	fc := fake.NewClientset(objs...)
	minSync := time.Second
	p := newProxy(fc, mode.IPVS, "rr", minSync)
	if err := p.Init(ctx); err != nil {
		r.fatal("bench-init", err)
	}
	mctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	inKernel := func(ip net.IP) (bool, error) {
		data, err := os.ReadFile("/proc/net/ip_vs")
		if err != nil {
			return false, err
		}
		b := ip.To4()
		return bytes.Contains(data, []byte(fmt.Sprintf("%02X%02X%02X%02X:1F90", b[0], b[1], b[2], b[3]))), nil
	}
	f, err := scenario.Measure(mctx, p, fc, services, endpoints, minSync, inKernel)
	if err != nil {
		r.fatal("bench", err)
	}
	t, _ := ipvsTable()
	r.check("bench-virtual-servers", len(t) >= services, "%d virtual servers in the kernel", len(t))
	fmt.Printf("KUBOX-BENCH program-%dx%d-ms %d\n", services, endpoints, f.Program.Milliseconds())
	fmt.Printf("KUBOX-BENCH endpoint-change-ms %d\n", f.Change.Milliseconds())
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	r.check("bench-stop", p.Stop(stopCtx) == nil, "stopped with cleanup")
}
