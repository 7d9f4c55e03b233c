package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/services/metrics"
	"github.com/kubox/kubox/test/harness"
)

// BenchmarkIdleMemory measures what an idle node costs in memory: a fresh
// node, Ready, then 60 s idle, with no pods and again with ten idle pods.
// For each it prints PSS and RSS of kubox and every child, each process's
// memory by mapping class (its binary's text, its binary's other pages,
// anonymous memory, other files), kubox's live Go heap after a forced GC,
// and that heap split by the component that allocated it.
// KUBOX_BENCH_LOG_DIR, if set, keeps the kubox log there.
func BenchmarkIdleMemory(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		n := harness.NewNode(b, env, "--test-pprof")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		begin := time.Now()
		n.Start()
		if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
			b.Fatal(err)
		}
		prof, err := newProfiler(n)
		if err != nil {
			b.Fatal(err)
		}
		cpu := idle(b, n, 60*time.Second)
		memorySnapshot(b, n, prof, "no pods", cpu)

		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			b.Fatal(err)
		}
		manifest := filepath.Join(n.Root, "pods.yaml")
		if err := os.WriteFile(manifest, []byte(podsManifest(podCount)), 0o600); err != nil {
			b.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			b.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			out, err := n.Kubectl(ctx, "get", "pods", "-l", "bench=start", "-o", "jsonpath={.items[*].status.phase}")
			return err == nil && strings.Count(out, "Running") == podCount
		}); err != nil {
			b.Fatal(err)
		}
		cpu = idle(b, n, 60*time.Second)
		memorySnapshot(b, n, prof, fmt.Sprintf("%d pods", podCount), cpu)

		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		keepLog(b, n)
		cancel()
	}
}

// idle waits for d and returns the CPU seconds each process of the node
// used meanwhile, by "name[pid]" as harness.TreeMemory names them: the CPU
// the memory settings cost (GC, page faults).
func idle(b *testing.B, n *harness.Node, d time.Duration) map[string]float64 {
	_, per, err := harness.TreeMemory(n.Pid())
	if err != nil {
		b.Fatal(err)
	}
	before := map[string]float64{}
	for name := range per {
		before[name] = cpuSeconds(name)
	}
	time.Sleep(d)
	used := map[string]float64{}
	for name, s := range before {
		if after := cpuSeconds(name); after >= s {
			used[name] = after - s
		}
	}
	return used
}

// cpuSeconds is the user+system CPU time of the process "name[pid]".
func cpuSeconds(name string) float64 {
	pid := strings.TrimSuffix(name[strings.LastIndexByte(name, '[')+1:], "]")
	_, cpu, ok := procStat(pid)
	if !ok {
		return -1
	}
	return cpu
}

// procStat reads a process's parent and the CPU it used (user + system, in
// seconds) from /proc/PID/stat; ok is false once it has exited.
func procStat(pid string) (ppid int, cpu float64, ok bool) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: fields after it.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	// Fields 4, 14 and 15 of stat; times in clock ticks (100 a second on Linux).
	ppid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return ppid, (utime + stime) / 100, true
}

// memorySnapshot prints and reports the node's memory now, and the CPU
// each process used in the idle time before (cpu, from idle).
func memorySnapshot(b *testing.B, n *harness.Node, prof *profiler, label string, cpu map[string]float64) {
	total, per, err := harness.TreeMemory(n.Pid())
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("--- idle 60 s, %s\n", label)
	report(b, "idle PSS, kubox + children ("+label+")", mib(total.PSS), "MiB")
	report(b, "idle RSS, kubox + children ("+label+")", mib(total.RSS), "MiB")
	var cpuTotal float64
	for _, s := range cpu {
		cpuTotal += s
	}
	report(b, "CPU in the idle 60 s, kubox + children ("+label+")", cpuTotal, "s")
	// Shims and pause/busybox processes are many: group them by name.
	type group struct {
		harness.Memory
		count   int
		cpu     float64
		classes map[string]harness.Memory
	}
	groups := map[string]*group{}
	for name, m := range per {
		key := name[:strings.LastIndexByte(name, '[')]
		g := groups[key]
		if g == nil {
			g = &group{classes: map[string]harness.Memory{}}
			groups[key] = g
		}
		g.RSS += m.RSS
		g.PSS += m.PSS
		g.count++
		g.cpu += cpu[name]
		pid, _ := strconv.Atoi(strings.TrimSuffix(name[strings.LastIndexByte(name, '[')+1:], "]"))
		classes, err := mappingClasses(pid)
		if err != nil {
			continue // exited meanwhile
		}
		for c, cm := range classes {
			s := g.classes[c]
			s.RSS += cm.RSS
			s.PSS += cm.PSS
			g.classes[c] = s
		}
	}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return groups[names[i]].PSS > groups[names[j]].PSS })
	for _, name := range names {
		g := groups[name]
		fmt.Printf("    %-30s x%-3d RSS %7.1f MiB  PSS %7.1f MiB  CPU %5.2f s in the 60 s\n", name, g.count, mib(g.RSS), mib(g.PSS), g.cpu)
		for _, c := range mappingClassNames {
			if m, ok := g.classes[c]; ok && m.RSS > 0 {
				fmt.Printf("        %-26s RSS %7.1f MiB  PSS %7.1f MiB\n", c, mib(m.RSS), mib(m.PSS))
			}
		}
	}
	if g := groups["kubox server"]; g != nil {
		report(b, "idle PSS, kubox server ("+label+")", mib(g.PSS), "MiB")
	}
	if g := groups["kubox kubelet"]; g != nil {
		report(b, "idle PSS, kubelet child ("+label+")", mib(g.PSS), "MiB")
	}

	heap, err := prof.heap()
	if err != nil {
		b.Fatal(err)
	}
	// For a closer look with go tool pprof.
	if dir := os.Getenv("KUBOX_BENCH_HEAP_DIR"); dir != "" {
		if raw, err := prof.get("/debug/pprof/heap"); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "heap-"+strings.ReplaceAll(label, " ", "-")+".pb.gz"), raw, 0o600)
		}
		// The kubelet child's, through the apiserver's node proxy.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if node, err := n.Kubectl(ctx, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"); err == nil {
			if raw, err := n.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/debug/pprof/heap?gc=1"); err == nil {
				_ = os.WriteFile(filepath.Join(dir, "kubelet-heap-"+strings.ReplaceAll(label, " ", "-")+".pb.gz"), []byte(raw), 0o600)
			}
		}
	}
	live, err := prof.metric("go_gc_heap_live_bytes")
	if err != nil {
		b.Fatal(err)
	}
	report(b, "kubox server Go heap live after GC ("+label+")", mib(int64(live)), "MiB")
	fmt.Printf("    kubox server heap in use by component (sampled profile, after GC):\n")
	for _, c := range heap {
		if c.bytes < 1<<19 {
			break
		}
		fmt.Printf("        %-40s %7.1f MiB\n", c.name, mib(int64(c.bytes)))
	}
}

// Mapping classes, in print order.
var mappingClassNames = []string{"binary text", "binary rodata+data", "anon (heap, stacks)", "other files"}

// mappingClasses sums RSS and PSS of pid's mappings by class: its own
// executable's executable pages, its executable's other pages (rodata with
// the embedded assets, data), anonymous memory (Go heap, stacks), and any
// other file.
func mappingClasses(pid int) (map[string]harness.Memory, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]harness.Memory{}
	class := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header
			path := ""
			if len(fields) >= 6 {
				path = strings.Join(fields[5:], " ")
			}
			switch {
			case path == exe && strings.Contains(fields[1], "x"):
				class = "binary text"
			case path == exe:
				class = "binary rodata+data"
			case path == "" || strings.HasPrefix(path, "["):
				class = "anon (heap, stacks)"
			default:
				class = "other files"
			}
			continue
		}
		if len(fields) < 2 || (fields[0] != "Rss:" && fields[0] != "Pss:") {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		m := out[class]
		if fields[0] == "Rss:" {
			m.RSS += kb << 10
		} else {
			m.PSS += kb << 10
		}
		out[class] = m
	}
	return out, sc.Err()
}

// profiler reads kubox's metrics endpoint (and its /debug/pprof/, which
// --test-pprof turns on) with the admin's client certificate.
type profiler struct {
	client *http.Client
	base   string
}

func newProfiler(n *harness.Node) (*profiler, error) {
	pki := filepath.Join(n.DataDir, "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	return &profiler{
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}},
		}},
		base: "https://" + metrics.DefaultAddress,
	}, nil
}

func (p *profiler) get(path string) ([]byte, error) {
	resp, err := p.client.Get(p.base + path)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s", path, resp.Status)
	}
	return body, nil
}

// metric returns the value of an unlabelled metric.
func (p *profiler) metric(name string) (float64, error) {
	body, err := p.get("/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metrics lack %s", name)
}

type heapShare struct {
	name  string
	bytes float64
}

// heap forces a GC and returns the in-use heap by component, largest
// first, from the legacy text heap profile (its samples scaled up as
// runtime/pprof does for its protobuf form).
func (p *profiler) heap() ([]heapShare, error) {
	body, err := p.get("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(body), "\n")
	if len(lines) == 0 {
		return nil, fmt.Errorf("empty heap profile")
	}
	// Header: "heap profile: N: B [N: B] @ heap/2*rate".
	_, r, ok := strings.Cut(lines[0], "@ heap/")
	rate, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
	if !ok || err != nil || rate <= 0 {
		return nil, fmt.Errorf("heap profile header %q", lines[0])
	}
	rate /= 2
	by := map[string]float64{}
	var count, size float64
	var frames []string
	flush := func() {
		if count > 0 && size > 0 {
			by[heapComponent(frames)] += size / (1 - math.Exp(-size/count/rate))
		}
		count, size, frames = 0, 0, nil
	}
	for _, line := range lines[1:] {
		switch {
		case strings.HasPrefix(line, "#\t"):
			if f := strings.Fields(line); len(f) >= 3 {
				frames = append(frames, f[2])
			}
		case strings.Contains(line, " @ "):
			flush()
			// "inuse_objects: inuse_bytes [alloc_objects: alloc_bytes] @ ..."
			f := strings.Fields(line)
			if len(f) >= 2 {
				count, _ = strconv.ParseFloat(strings.TrimSuffix(f[0], ":"), 64)
				size, _ = strconv.ParseFloat(f[1], 64)
			}
		case strings.HasPrefix(line, "# runtime.MemStats"):
			flush()
		}
	}
	flush()
	out := make([]heapShare, 0, len(by))
	for name, v := range by {
		out = append(out, heapShare{name, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].bytes > out[j].bytes })
	return out, nil
}

// heapComponents names a stack's component by the first rule whose
// function prefix appears anywhere in it: more specific rules first, so
// the apiserver's watch cache is not counted as the apiserver's other
// memory, nor package initialisation as whoever ran it.
var heapComponents = []struct{ name, prefix string }{
	{"package init (global vars)", "runtime.doInit"},
	{"apiserver watch cache", "k8s.io/apiserver/pkg/storage/cacher."},
	{"etcd", "go.etcd.io/etcd/server/"},
	{"etcd", "go.etcd.io/bbolt"},
	{"etcd", "go.etcd.io/raft/"},
	{"apiserver OpenAPI", "k8s.io/kube-openapi/"},
	{"controller-manager", "k8s.io/kubernetes/pkg/controller/"},
	{"controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager/"},
	{"scheduler", "k8s.io/kubernetes/pkg/scheduler"},
	{"proxy", "k8s.io/kubernetes/pkg/proxy"},
	{"dns", "github.com/coredns/"},
	{"apiserver", "k8s.io/apiserver/"},
	{"apiserver", "k8s.io/kube-aggregator/"},
	{"apiserver", "k8s.io/apiextensions-apiserver/"},
	{"apiserver", "k8s.io/kubernetes/pkg/controlplane"},
	{"apiserver", "k8s.io/kubernetes/pkg/registry/"},
	{"apiserver", "k8s.io/kubernetes/pkg/kubeapiserver"},
	{"apiserver", "k8s.io/kubernetes/cmd/kube-apiserver/"},
	{"informers (client-go caches, any component)", "k8s.io/client-go/tools/cache."},
	{"kubox", "github.com/kubox/kubox/"},
	{"grpc", "google.golang.org/grpc"},
}

func heapComponent(frames []string) string {
	for _, r := range heapComponents {
		for _, f := range frames {
			if strings.HasPrefix(f, r.prefix) {
				return r.name
			}
		}
	}
	// Else the outermost function, which started the goroutine.
	if len(frames) > 0 {
		return "other: " + frames[len(frames)-1]
	}
	return "other"
}
