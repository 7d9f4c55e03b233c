// Package bench measures kubox on this machine: binary size, cold and warm
// start, idle memory, and how fast pods start. `make bench` runs it and
// prints the figures.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const podCount = 10

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// BenchmarkSingleNode starts one node from a fresh data dir and measures the
// single-box figures the design targets.
func BenchmarkSingleNode(b *testing.B) {
	env := harness.Require(b)
	fi, err := os.Stat(env.Bin)
	if err != nil {
		b.Fatal(err)
	}
	report(b, "binary size", mib(fi.Size()), "MiB")

	for i := 0; i < b.N; i++ {
		n := harness.NewNode(b, env)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)

		// Cold start.
		begin := time.Now()
		n.Start()
		if err := n.WaitReadyz(ctx); err != nil {
			b.Fatal(err)
		}
		report(b, "cold start to apiserver /readyz", time.Since(begin).Seconds(), "s")
		if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
			b.Fatal(err)
		}
		report(b, "cold start to Node Ready", time.Since(begin).Seconds(), "s")

		// Idle memory with no pods.
		time.Sleep(60 * time.Second)
		total, per, err := harness.TreeMemory(n.Pid())
		if err != nil {
			b.Fatal(err)
		}
		report(b, "idle RSS, kubox + children (60 s, no pods)", mib(total.RSS), "MiB")
		report(b, "idle PSS, kubox + children (60 s, no pods)", mib(total.PSS), "MiB")
		names := make([]string, 0, len(per))
		var kubeletChild harness.Memory
		for name, m := range per {
			names = append(names, name)
			if strings.HasPrefix(name, "kubox kubelet[") {
				kubeletChild.RSS += m.RSS
				kubeletChild.PSS += m.PSS
			}
		}
		// The kubelet runs as a child process (`kubox kubelet`); 0 for a
		// kubox that runs it in-process.
		report(b, "idle PSS, of which the kubelet child", mib(kubeletChild.PSS), "MiB")
		sort.Strings(names)
		for _, name := range names {
			fmt.Printf("    %-28s RSS %7.1f MiB  PSS %7.1f MiB\n", name, mib(per[name].RSS), mib(per[name].PSS))
		}

		// Ten pods from kubectl apply to Running.
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			b.Fatal(err)
		}
		manifest := filepath.Join(n.Root, "pods.yaml")
		if err := os.WriteFile(manifest, []byte(podsManifest(podCount)), 0o600); err != nil {
			b.Fatal(err)
		}
		begin = time.Now()
		if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			b.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 50*time.Millisecond, func() bool {
			out, err := n.Kubectl(ctx, "get", "pods", "-l", "bench=start", "-o", "jsonpath={.items[*].status.phase}")
			return err == nil && strings.Count(out, "Running") == podCount
		}); err != nil {
			b.Fatal(err)
		}
		report(b, fmt.Sprintf("kubectl apply of %d pods to all Running", podCount), time.Since(begin).Seconds(), "s")

		stopTook, err := n.Stop(30 * time.Second)
		if err != nil {
			b.Fatal(err)
		}
		report(b, fmt.Sprintf("stop with %d pods (SIGTERM to exit)", podCount), stopTook.Seconds(), "s")

		// Warm restart on the same data dir.
		begin = time.Now()
		n.Start()
		if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
			b.Fatal(err)
		}
		report(b, "warm restart to Node Ready", time.Since(begin).Seconds(), "s")
		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
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
