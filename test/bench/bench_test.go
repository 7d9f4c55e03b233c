// Package bench measures kubox on this machine: binary size, start and stop
// times, idle memory, and how fast pods start. `make bench` runs it and
// prints the figures.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/test/harness"
)

const podCount = 10

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// The single-box time figures, in the order they are printed.
const (
	coldReadyz   = "cold start to apiserver /readyz"
	coldNode     = "cold start to Node Ready"
	stopNoPods   = "stop with no pods (SIGTERM to exit)"
	warmReadyz   = "warm restart to apiserver /readyz"
	warmNode     = "warm restart to Node Ready"
	applyPods    = "kubectl apply of 10 pods to all Running"
	stopPods     = "stop with 10 pods (SIGTERM to exit)"
	stopKeepPods = "stop with 10 pods, --stop-pods-on-exit=false"
)

// BenchmarkSingleNode runs the single-box start and stop cycle
// KUBOX_BENCH_RUNS times (default 5), each on a fresh node, and prints the
// median, min and max of every time, then when each component was ready
// (from kubox's "component ready" lines, relative to exec of kubox).
//
// KUBOX_BENCH_LOG_DIR, if set, keeps each cycle's kubox log there.
//
// One cycle: cold start; stop with no pods; warm restart; 10 pods of an
// imported image from apply to Running; stop with them (default
// --stop-pods-on-exit); start with --stop-pods-on-exit=false, the pods
// back to Running, stop again. The kept pods go with the node's harness
// cleanup at the end of the cycle, as in the keep-pods e2e test.
func BenchmarkSingleNode(b *testing.B) {
	env := harness.Require(b)
	fi, err := os.Stat(env.Bin)
	if err != nil {
		b.Fatal(err)
	}
	report(b, "binary size", mib(fi.Size()), "MiB")
	runs := 5
	if v := os.Getenv("KUBOX_BENCH_RUNS"); v != "" {
		if runs, err = strconv.Atoi(v); err != nil || runs < 1 {
			b.Fatalf("KUBOX_BENCH_RUNS=%q: want a positive number", v)
		}
	}
	times := map[string][]float64{}
	cold, warm := &breakdown{}, &breakdown{}
	for i := 0; i < b.N; i++ {
		for r := 1; r <= runs; r++ {
			// A sub-benchmark per cycle: the node's cleanup (kept pods,
			// mounts, links) runs before the next cycle starts.
			b.Run(fmt.Sprintf("cycle-%d", r), func(b *testing.B) {
				cycle(b, env, times, cold, warm)
			})
		}
	}
	fmt.Printf("\nsingle box, %d runs: median (min .. max)\n", runs)
	for _, what := range []string{coldReadyz, coldNode, stopNoPods, warmReadyz, warmNode, applyPods, stopPods, stopKeepPods} {
		med, lo, hi := stats(times[what])
		fmt.Printf("%-48s %6.2f s  (%.2f .. %.2f)\n", what, med, lo, hi)
		b.ReportMetric(med, strings.ReplaceAll(strings.ReplaceAll(what, " ", "_"), ",", "")+"_median_s")
	}
	cold.print("cold start: component ready at, s after exec (median, min .. max)")
	warm.print("warm restart: component ready at, s after exec (median, min .. max)")
}

// cycle runs one start/restart/stop cycle on a fresh node and records its
// figures.
func cycle(b *testing.B, env harness.Env, times map[string][]float64, cold, warm *breakdown) {
	n := harness.NewNode(b, env)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	record := func(what string, d time.Duration) {
		if what == "" {
			return
		}
		times[what] = append(times[what], d.Seconds())
		fmt.Printf("  %-46s %6.2f s\n", what, d.Seconds())
	}
	start := func(readyz, node string, bd *breakdown) {
		offset := logSize(n)
		begin := time.Now()
		n.Start()
		checks := waitReadyzChecks(b, ctx, n, begin)
		record(readyz, time.Since(begin))
		if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
			b.Fatal(err)
		}
		record(node, time.Since(begin))
		if bd != nil {
			bd.add(b, ctx, n, offset, begin)
			bd.addChecks(checks)
		}
	}
	stop := func(what string) {
		took, err := n.Stop(30 * time.Second)
		if err != nil {
			b.Fatal(err)
		}
		record(what, took)
	}

	start(coldReadyz, coldNode, cold)
	stop(stopNoPods)
	start(warmReadyz, warmNode, warm)

	if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
		b.Fatal(err)
	}
	manifest := filepath.Join(n.Root, "pods.yaml")
	if err := os.WriteFile(manifest, []byte(podsManifest(podCount)), 0o600); err != nil {
		b.Fatal(err)
	}
	begin := time.Now()
	if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		b.Fatal(err)
	}
	waitPodsRunning(b, ctx, n)
	record(applyPods, time.Since(begin))
	stop(stopPods)
	// Nothing left behind: no containerd, shim, kubelet or pod process.
	if left := n.Processes(); len(left) > 0 {
		b.Fatalf("processes left after the stop with pods: %v", left)
	}

	n.Args = append(n.Args, "--stop-pods-on-exit=false")
	start("", "", nil)
	waitPodsRunning(b, ctx, n)
	stop(stopKeepPods)

	keepLog(b, n)
}

// keepLog copies the node's log into KUBOX_BENCH_LOG_DIR, when set: the
// node's dir goes with its cleanup.
func keepLog(b *testing.B, n *harness.Node) {
	dir := os.Getenv("KUBOX_BENCH_LOG_DIR")
	if dir == "" {
		return
	}
	data, err := os.ReadFile(n.LogPath)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".log"), data, 0o600)
	}
	if err != nil {
		b.Errorf("keep the log: %v", err)
	}
}

func waitPodsRunning(b *testing.B, ctx context.Context, n *harness.Node) {
	b.Helper()
	if err := harness.WaitFor(ctx, 50*time.Millisecond, func() bool {
		out, err := n.Kubectl(ctx, "get", "pods", "-l", "bench=start", "-o", "jsonpath={.items[*].status.phase}")
		return err == nil && strings.Count(out, "Running") == podCount
	}); err != nil {
		b.Fatal(err)
	}
}

func logSize(n *harness.Node) int64 {
	fi, err := os.Stat(n.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// breakdown collects, per component, when it was ready after exec.
type breakdown struct {
	order []string
	at    map[string][]float64
}

// add waits for the start from offset on in n's log to end ("kubox is
// ready") and records when each component was ready, relative to begin.
func (bd *breakdown) add(b *testing.B, ctx context.Context, n *harness.Node, offset int64, begin time.Time) {
	b.Helper()
	var lines []string
	if err := harness.WaitFor(ctx, 50*time.Millisecond, func() bool {
		lines = logLines(n, offset)
		return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `msg="kubox is ready"`) })
	}); err != nil {
		b.Fatalf("no \"kubox is ready\" line: %v", err)
	}
	if bd.at == nil {
		bd.at = map[string][]float64{}
	}
	for _, l := range lines {
		var name string
		switch {
		case strings.Contains(l, `msg="component ready"`):
			name = field(l, "component")
		case strings.Contains(l, `msg="kubox is ready"`):
			name = "(kubox is ready)"
		default:
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, field(l, "time"))
		if err != nil || name == "" {
			continue
		}
		if _, ok := bd.at[name]; !ok {
			bd.order = append(bd.order, name)
		}
		bd.at[name] = append(bd.at[name], t.Sub(begin).Seconds())
	}
}

// addChecks records when each of the apiserver's readiness checks first
// passed, for those that failed at its first answer.
func (bd *breakdown) addChecks(checks map[string]float64) {
	names := make([]string, 0, len(checks))
	for name := range checks {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return int((checks[a] - checks[b]) * 1e6) })
	for _, name := range names {
		key := "  readyz " + name
		if _, ok := bd.at[key]; !ok {
			bd.order = append(bd.order, key)
		}
		bd.at[key] = append(bd.at[key], checks[name])
	}
}

// waitReadyzChecks polls the apiserver's /readyz?verbose until it is ok and
// returns when it first answered ("(serving)") and when each check that
// failed in an answer passed (s after begin).
func waitReadyzChecks(b *testing.B, ctx context.Context, n *harness.Node, begin time.Time) map[string]float64 {
	b.Helper()
	// A plain HTTP client: client-go drops the body of a non-2xx answer,
	// which is where the failing checks are.
	var hc *http.Client
	var host string
	failing := map[string]bool{}
	at := map[string]float64{}
	if err := harness.WaitFor(ctx, 20*time.Millisecond, func() bool {
		if hc == nil {
			if _, err := os.Stat(n.Kubeconfig); err != nil {
				return false
			}
			rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
			if err != nil {
				return false
			}
			if hc, err = rest.HTTPClientFor(rc); err != nil {
				return false
			}
			hc.Timeout, host = 2*time.Second, rc.Host
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/readyz?verbose", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(data)
		if err != nil || !strings.Contains(body, "readyz check") {
			return false
		}
		now := time.Since(begin).Seconds()
		if _, ok := at["(serving)"]; !ok {
			at["(serving)"] = now
		}
		for _, l := range strings.Split(body, "\n") {
			name, _, _ := strings.Cut(strings.TrimSpace(l[min(3, len(l)):]), " ")
			switch {
			case strings.HasPrefix(l, "[-]"):
				failing[name] = true
			case strings.HasPrefix(l, "[+]") && failing[name]:
				if _, ok := at[name]; !ok {
					at[name] = now
				}
			}
		}
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		b.Fatal(err)
	}
	return at
}

func (bd *breakdown) print(title string) {
	fmt.Printf("\n%s\n", title)
	for _, name := range bd.order {
		med, lo, hi := stats(bd.at[name])
		fmt.Printf("  %-24s %6.2f  (%.2f .. %.2f)\n", name, med, lo, hi)
	}
}

// logLines is the node's log from offset on.
func logLines(n *harness.Node, offset int64) []string {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// field is the value of key=value in a slog text line ("" if absent).
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		if !strings.HasPrefix(line, key+"=") {
			return ""
		}
		i = -1
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return strings.Trim(v, `"`)
}

// stats is the median, min and max of v (zeros if v is empty).
func stats(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

func report(b *testing.B, what string, v float64, unit string) {
	fmt.Printf("%-48s %8.2f %s\n", what, v, unit)
	b.ReportMetric(v, strings.ReplaceAll(strings.ReplaceAll(what, " ", "_"), ",", "")+"_"+unit)
}

func podsManifest(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, `---
apiVersion: v1
kind: Pod
metadata:
  name: bench-%d
  labels: {bench: start}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
    resources:
      requests: {cpu: 10m, memory: 8Mi}
`, i)
	}
	return sb.String()
}
