package bench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// BenchmarkMetricsAPIIdle measures what the resource metrics API
// (services/resourcemetrics: every kubelet scraped every 15 s, the group
// served by the apiserver) costs an idle single box: the kubox server
// process's PSS, and the CPU seconds of kubox and its children (the
// kubelet child answers the scrapes) over 60 s, with the API on (once
// `kubectl top nodes` has figures) and with --disable-metrics-api, each on
// a fresh node 60 s after Node Ready. Idle CPU on a shared machine is
// noisy: compare the two runs of one invocation.
func BenchmarkMetricsAPIIdle(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		off := metricsAPIIdle(b, env, false)
		on := metricsAPIIdle(b, env, true)
		report(b, "kubox server PSS, metrics API off (idle)", mib(off.pss), "MiB")
		report(b, "kubox server PSS, metrics API on (idle)", mib(on.pss), "MiB")
		report(b, "PSS added by the metrics API", mib(on.pss-off.pss), "MiB")
		report(b, "kubox+children CPU over 60 s idle, API off", off.treeCPU, "s")
		report(b, "kubox+children CPU over 60 s idle, API on", on.treeCPU, "s")
		report(b, "of which kubox server, API off", off.serverCPU, "s")
		report(b, "of which kubox server, API on", on.serverCPU, "s")
		report(b, "CPU added by the metrics API (per 60 s)", on.treeCPU-off.treeCPU, "s")
	}
}

type idleFigures struct {
	pss                int64
	treeCPU, serverCPU float64
}

func metricsAPIIdle(b *testing.B, env harness.Env, on bool) idleFigures {
	var args []string
	if !on {
		args = []string{"--disable-metrics-api"}
	}
	n := harness.NewNode(b, env, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	begin := time.Now()
	n.Start()
	if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
		b.Fatal(err)
	}
	ready := time.Now()
	if on {
		cpuFigure := regexp.MustCompile(`\s\d+m\s`) // kubectl top's CPU(cores): 123m
		if err := harness.WaitFor(ctx, time.Second, func() bool {
			out, err := n.Kubectl(ctx, "top", "nodes", "--no-headers")
			return err == nil && cpuFigure.MatchString(out)
		}); err != nil {
			b.Fatalf("kubectl top nodes never had figures: %v", err)
		}
		report(b, "kubectl top nodes has figures, after Node Ready", time.Since(ready).Seconds(), "s")
	}
	time.Sleep(time.Until(ready.Add(60 * time.Second)))

	tree0, server0 := treeCPUSeconds(b, n.Pid())
	time.Sleep(60 * time.Second)
	tree1, server1 := treeCPUSeconds(b, n.Pid())

	var pss int64
	const samples = 5
	for s := 0; s < samples; s++ {
		_, per, err := harness.TreeMemory(n.Pid())
		if err != nil {
			b.Fatal(err)
		}
		m, ok := per[fmt.Sprintf("kubox server[%d]", n.Pid())]
		if !ok {
			b.Fatalf("no kubox server process among %v", per)
		}
		pss += m.PSS
		time.Sleep(2 * time.Second)
	}
	if _, err := n.Stop(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	return idleFigures{pss: pss / samples, treeCPU: tree1 - tree0, serverCPU: server1 - server0}
}

// cpuSeconds returns the user+system CPU seconds used so far by pid and
// its descendants, and by pid alone.
func treeCPUSeconds(b *testing.B, pid int) (tree, self float64) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	parent := map[int]int{}
	used := map[int]float64{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, cpu, ok := procStat(e.Name())
		if !ok {
			continue // exited
		}
		parent[p] = ppid
		used[p] = cpu
	}
	for p, u := range used {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				tree += u
				break
			}
		}
	}
	return tree, used[pid]
}
