package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubox/kubox/test/harness"
)

// The upstream resolver the test runs on loopback: cluster DNS forwards
// names outside the cluster to it (kubox runs in the host's network
// namespace, so the host's loopback is reachable from its forwarder).
const (
	upstreamAddr = "127.0.0.153"
	upstreamName = "upstream.kubox.test."
	upstreamIP   = "192.0.2.10"
	directName   = "direct.kubox.test."
	directIP     = "192.0.2.11"
	stubName     = "www.stub.kubox.test."
	stubIP       = "192.0.2.20"
	stub2Name    = "www.stub2.kubox.test."
	stub2IP      = "192.0.2.21"
	testDNSPort  = "1053"
)

const dnsManifests = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: upstream.kubox.test
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    command: [sleep, "3600"]
`

// dnsStartUpstream serves upstreamName and stubName on upstreamAddr:53 (UDP)
// and counts the queries it gets.
func dnsStartUpstream(t *testing.T) *atomic.Int64 {
	t.Helper()
	var queries atomic.Int64
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(upstreamAddr, "53"))
	if err != nil {
		t.Fatalf("test upstream resolver: %v", err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		answers := map[string]string{upstreamName: upstreamIP, directName: directIP, stubName: stubIP, stub2Name: stub2IP}
		if ip, ok := answers[strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(ip)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return &queries
}

// TestClusterDNS resolves, from inside a pod, a Service, a headless
// Service's endpoints (following a scale within 5 s), an ExternalName, a
// pod's dashed name, a name from the host's /etc/hosts, a name outside the
// cluster through the forwarder, and a stub zone from the operator's DNS
// config; and checks the kube-dns Service and its EndpointSlice.
func TestClusterDNS(t *testing.T) {
	env := harness.Require(t)
	upstreamQueries := dnsStartUpstream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	override := filepath.Join(dir, "dns.conf")
	dnsWriteFile(t, resolv, "nameserver "+upstreamAddr+"\n")
	dnsWriteFile(t, override, "stub.kubox.test {\n    forward . "+upstreamAddr+"\n    log\n}\n")
	n := harness.NewNode(t, env, "--dns-port", testDNSPort, "--resolv-conf", resolv, "--dns-config", override, "--test-dns-reload-interval", "2s")
	waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer waitCancel()
	began := time.Now()
	defer func() { t.Logf("test took %s after start", time.Since(began).Round(time.Second)) }()

	var nodeIP, server string
	harness.Phase(t, "start", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(waitCtx); err != nil {
			t.Fatal(err)
		}
		t.Logf("node Ready %s after start", time.Since(began).Round(time.Second))
		nodeIP = dnsKubectlOut(ctx, t, n, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
		server = net.JoinHostPort(nodeIP, testDNSPort)
	})

	harness.Phase(t, "kube-dns-service", func(t *testing.T) {
		// The cluster DNS Service: the kubelet's clusterDNS address, no
		// selector, an EndpointSlice pointing at this node's listener.
		if got := dnsKubectlOut(ctx, t, n, "-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP} {.spec.selector}"); got != "10.43.0.10" {
			t.Errorf("kube-dns Service: clusterIP and selector %q, want 10.43.0.10 and none", got)
		}
		slice := dnsKubectlOut(ctx, t, n, "-n", "kube-system", "get", "endpointslices", "-l", "kubernetes.io/service-name=kube-dns", "-o",
			`jsonpath={range .items[*]}{.endpoints[0].addresses[0]} {.endpoints[0].conditions.ready} {.ports[*].port} {.ports[*].protocol}{"\n"}{end}`)
		if want := nodeIP + " true 1053 1053 UDP TCP"; slice != want {
			t.Errorf("kube-dns EndpointSlices: %q, want %q", slice, want)
		}
	})

	var podIPs []string
	harness.Phase(t, "workloads", func(t *testing.T) {
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		manifest := filepath.Join(n.Root, "dns.yaml")
		dnsWriteFile(t, manifest, dnsManifests)
		if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/client", "--timeout=3m"); err != nil {
			t.Fatal(err)
		}
		podIPs = waitWebPods(ctx, t, n, 2, time.Time{})

		// The pod's resolv.conf is the normal one: the cluster DNS Service.
		if rc, err := n.Kubectl(ctx, "exec", "client", "--", "cat", "/etc/resolv.conf"); err != nil || !strings.Contains(rc, "nameserver 10.43.0.10") || !strings.Contains(rc, "search default.svc.cluster.local svc.cluster.local cluster.local") {
			t.Errorf("pod resolv.conf: %q %v", rc, err)
		}
	})

	// Queries go the normal way: the pod's resolv.conf names the kube-dns
	// Service, which the service proxy sends to this node's listener.
	lookup := func(name string, extra ...string) (string, error) {
		args := append([]string{"exec", "client", "--", "nslookup"}, extra...)
		return n.Kubectl(ctx, append(args, name)...)
	}
	expect := func(t *testing.T, what, name string, want ...string) {
		t.Helper()
		out, err := lookup(name)
		if err != nil {
			t.Errorf("%s: nslookup %s: %v\n%s", what, name, err, out)
			return
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: nslookup %s: answer lacks %q:\n%s", what, name, w, out)
			}
		}
	}

	harness.Phase(t, "lookups", func(t *testing.T) {
		webIP := dnsKubectlOut(ctx, t, n, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
		expect(t, "Service", "web.default.svc.cluster.local", "Address: "+webIP)
		// busybox nslookup tries every search domain and fails if any does not
		// answer; the first one does.
		if out, _ := lookup("web"); !strings.Contains(out, "Name:\tweb.default.svc.cluster.local\nAddress: "+webIP) {
			t.Errorf("Service by short name (search path): %s", out)
		}
		if out, err := n.Kubectl(ctx, "exec", "client", "--", "nslookup", "web.default.svc.cluster.local", server); err != nil || !strings.Contains(out, "Address: "+webIP) {
			t.Errorf("Service, asking the node's listener %s directly: %v\n%s", server, err, out)
		}
		expect(t, "the API server's Service", "kubernetes.default.svc.cluster.local", "Address: 10.43.0.1")
		expect(t, "Service PTR", webIP, "web.default.svc.cluster.local")
		if out, err := lookup("_http._tcp.web.default.svc.cluster.local", "-type=srv"); err != nil || !strings.Contains(out, "80 web.default.svc.cluster.local") {
			t.Errorf("SRV for the named port: %v\n%s", err, out)
		}
		expect(t, "headless Service", "web-headless.default.svc.cluster.local", dnsAddrLines(podIPs)...)
		dashed := strings.ReplaceAll(podIPs[0], ".", "-") + ".default.pod.cluster.local"
		expect(t, "pod dashed name", dashed, "Address: "+podIPs[0])
		expect(t, "ExternalName", "ext.default.svc.cluster.local", "canonical name = upstream.kubox.test", "Address: "+upstreamIP)
		before := upstreamQueries.Load()
		expect(t, "forwarded name", directName, "Address: "+directIP)
		if upstreamQueries.Load() == before {
			t.Errorf("the upstream resolver saw no query for %s", directName)
		}
		expect(t, "stub zone from the DNS config", stubName, "Address: "+stubIP)
		hostName, hostIP := dnsHostsEntry(t)
		expect(t, "host /etc/hosts", hostName+".", "Address: "+hostIP)
		if out, err := lookup("nothing-here.default.svc.cluster.local"); err == nil || !strings.Contains(out, "NXDOMAIN") {
			t.Errorf("unknown Service: want NXDOMAIN, got %v\n%s", err, out)
		}
	})

	harness.Phase(t, "outsiders-refused", func(t *testing.T) {
		// A host on the LAN (a network namespace joined to the box by a veth
		// pair) reaches the box, but cluster DNS answers it nothing: neither
		// the cluster's names nor outside ones (no open resolver), over UDP
		// or TCP. The box itself is answered (pods were, in lookups).
		lan := harness.NewNetns(t, "kubox-e2e-dnslan", 5)
		dial := harness.DialContext(t, lan.Name)
		if c, err := dial(ctx, "tcp", net.JoinHostPort(nodeIP, "6443")); err != nil {
			t.Fatalf("the LAN host %s cannot reach the box's apiserver (%v): a DNS refusal would show nothing", lan.IP, err)
		} else {
			c.Close()
		}
		ask := func(dialer func(ctx context.Context, network, addr string) (net.Conn, error), network, name string) (*dns.Msg, error) {
			c, err := dialer(ctx, network, server)
			if err != nil {
				return nil, err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			co := &dns.Conn{Conn: c}
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if err := co.WriteMsg(m); err != nil {
				return nil, err
			}
			return co.ReadMsg()
		}
		var host net.Dialer
		for _, name := range []string{"kubernetes.default.svc.cluster.local.", directName} {
			for _, network := range []string{"udp", "tcp"} {
				r, err := ask(dial, network, name)
				switch {
				case err != nil:
					t.Logf("LAN host, %s %s: no answer (%v)", network, name, err)
				case r.Rcode != dns.RcodeRefused || len(r.Answer) > 0:
					t.Errorf("LAN host %s, %s %s: answered %s with %d records, want no answer or REFUSED", lan.IP, network, name, dns.RcodeToString[r.Rcode], len(r.Answer))
				default:
					t.Logf("LAN host, %s %s: REFUSED", network, name)
				}
				if r, err := ask(host.DialContext, network, name); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					t.Errorf("the box itself, %s %s: %v %v, want an answer", network, name, r, err)
				}
			}
		}
	})

	harness.Phase(t, "headless-scale", func(t *testing.T) {
		// Scale the headless Service's Deployment: once the new pod is Ready
		// (in the EndpointSlice), DNS answers with it within 5 s; after a scale
		// down the answers shrink within 5 s of the endpoints changing.
		for _, replicas := range []int{3, 1} {
			if _, err := n.Kubectl(ctx, "scale", "deployment", "web", fmt.Sprintf("--replicas=%d", replicas)); err != nil {
				t.Fatal(err)
			}
			want := dnsWaitReadyEndpoints(ctx, t, n, "web-headless", replicas)
			changed := time.Now()
			var got []string
			for time.Since(changed) < 5*time.Second {
				out, _ := lookup("web-headless.default.svc.cluster.local")
				got = dnsAnswerIPs(out)
				if slices.Equal(got, want) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%d replicas: DNS answers %v 5 s after the endpoints became %v", replicas, got, want)
			} else {
				t.Logf("%d replicas: DNS answered the new endpoints %s after they changed", replicas, time.Since(changed).Round(10*time.Millisecond))
			}
		}
	})

	harness.Phase(t, "config-reload", func(t *testing.T) {
		// A changed DNS config is picked up while running; a bad edit is
		// logged once and the running configuration stays.
		dnsWriteFile(t, override, "stub.kubox.test {\n    forward . "+upstreamAddr+"\n}\nstub2.kubox.test {\n    forward . "+upstreamAddr+"\n}\n")
		edited := time.Now()
		for {
			out, err := lookup(stub2Name)
			if err == nil && strings.Contains(out, "Address: "+stub2IP) {
				t.Logf("edited DNS config served %s after the edit", time.Since(edited).Round(100*time.Millisecond))
				break
			}
			if time.Since(edited) > 30*time.Second {
				t.Fatalf("a zone added to the DNS config does not resolve 30 s later: %v\n%s", err, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		dnsWriteFile(t, override, "stub2.kubox.test {\n    rewrite name a b\n}\n")
		logCtx, logCancel := context.WithTimeout(ctx, 20*time.Second)
		defer logCancel()
		if err := harness.WaitFor(logCtx, 500*time.Millisecond, func() bool {
			log, _ := os.ReadFile(n.LogPath)
			return strings.Contains(string(log), "DNS configuration not reloaded")
		}); err != nil {
			t.Errorf("a bad edit of the DNS config was not logged: %v", err)
		}
		expect(t, "running configuration after a bad edit", stub2Name, "Address: "+stub2IP)
	})

	harness.Phase(t, "stop", func(t *testing.T) {
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
}

// TestClusterDNSBadConfig: a DNS config kubox cannot run stops the start
// with one line naming the file, before anything is started.
func TestClusterDNSBadConfig(t *testing.T) {
	env := harness.Require(t)
	override := filepath.Join(t.TempDir(), "dns.conf")
	dnsWriteFile(t, override, "stub.kubox.test {\n    rewrite name a b\n}\n")
	n := harness.NewNode(t, env, "--dns-port", testDNSPort, "--dns-config", override)
	n.Start()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if done, err := n.Exited(); done {
			if err == nil {
				t.Fatal("kubox exited 0 with a bad DNS config")
			}
			log, _ := os.ReadFile(n.LogPath)
			if !strings.Contains(string(log), override+`:2: plugin "rewrite" is not built into kubox`) {
				t.Errorf("log does not say what is wrong:\n%s", log)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("kubox kept running with a bad DNS config")
}

func dnsWriteFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func dnsKubectlOut(ctx context.Context, t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	out, err := n.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func dnsAddrLines(ips []string) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, "Address: "+ip)
	}
	return out
}

// dnsAnswerIPs are the IPv4 addresses in an nslookup answer (not the server's).
func dnsAnswerIPs(out string) []string {
	var ips []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if ip, ok := strings.CutPrefix(line, "Address: "); ok && net.ParseIP(ip).To4() != nil {
			ips = append(ips, ip)
		}
	}
	sort.Strings(ips)
	return ips
}

// dnsWaitReadyEndpoints waits for the Service's slices to hold exactly want
// ready addresses and returns them, sorted.
func dnsWaitReadyEndpoints(ctx context.Context, t *testing.T, n *harness.Node, svc string, want int) []string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		out, err := n.Kubectl(ctx, "get", "endpointslices", "-l", "kubernetes.io/service-name="+svc, "-o",
			`jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready}{"\n"}{end}`)
		if err == nil {
			var ips []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[1] == "true" {
					ips = append(ips, f[0])
				}
			}
			if len(ips) == want {
				sort.Strings(ips)
				return ips
			}
			last = out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("Service %s: want %d ready endpoints, last:\n%s", svc, want, last)
	return nil
}

// dnsHostsEntry picks a name from the host's /etc/hosts and its IPv4 address.
func dnsHostsEntry(t *testing.T) (string, string) {
	t.Helper()
	data, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	name, ip := "", ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.SplitN(line, "#", 2)[0])
		if len(f) >= 2 && net.ParseIP(f[0]).To4() != nil {
			name, ip = f[len(f)-1], f[0]
		}
	}
	if name == "" {
		t.Fatal("no IPv4 entry in /etc/hosts")
	}
	return name, ip
}
