package bench

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/proxy/mode"
	"github.com/kubox/kubox/test/harness"
	"github.com/kubox/kubox/test/vm"
	"github.com/kubox/kubox/test/vm/scenario"
)

const (
	benchServices  = 1000
	benchEndpoints = 10
)

// BenchmarkProxyNFTables: kubox's service proxy in nftables mode on this
// host's kernel, fed 1000 Services x 10 endpoints from a fake clientset:
// the time to program them all, and for one endpoint change to reach the
// kernel (the proxier's default 1 s minimum sync interval does not apply:
// the change comes after it). The rules are removed afterwards.
func BenchmarkProxyNFTables(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: it programs nftables")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		b.Skip("needs the nft tool")
	}
	harness.LockHost(b) // no test node's proxy may own the kube-proxy table meanwhile
	for i := 0; i < b.N; i++ {
		objs := append([]runtime.Object{scenario.Node("bench", net.IPv4(127, 0, 0, 1))}, scenario.Load(benchServices, benchEndpoints)...)
		client := fake.NewClientset(objs...)
		p := proxy.New(proxy.Config{
			Mode: mode.NFTables, NodeName: "bench", NodeIP: net.IPv4(127, 0, 0, 1),
			ClusterCIDR: &net.IPNet{IP: net.IPv4(10, 244, 0, 0), Mask: net.CIDRMask(16, 32)},
			Client:      client, CleanupOnStop: true,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if err := p.Init(ctx); err != nil {
			b.Fatal(err)
		}
		inKernel := func(ip net.IP) (bool, error) {
			out, err := exec.Command("nft", "list", "table", "ip", "kube-proxy").Output()
			return strings.Contains(string(out), ip.String()+" "), err
		}
		f, err := scenario.Measure(ctx, p, client, benchServices, benchEndpoints, proxy.DefaultMinSyncPeriod, inKernel)
		stopErr := p.Stop(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if stopErr != nil {
			b.Fatal(stopErr)
		}
		if exec.Command("nft", "list", "table", "ip", "kube-proxy").Run() == nil {
			b.Fatal("the kube-proxy nftables table is left after a stop with cleanup")
		}
		report(b, "nftables: program 1000 Services x 10 endpoints", f.Program.Seconds()*1000, "ms")
		report(b, "nftables: one endpoint change to the kernel", f.Change.Seconds()*1000, "ms")
	}
}

// BenchmarkProxyIPVSVM: the same in IPVS mode, on Debian's kernel under
// qemu. The VM is emulated (TCG, no KVM here): its figures are many times
// those of real hardware, useful to compare runs, not to predict a box.
func BenchmarkProxyIPVSVM(b *testing.B) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("needs qemu-system-x86 and linux-image-amd64")
	}
	if _, err := vm.FindKernel(); err != nil {
		b.Skip(err)
	}
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		k, initramfs, err := vm.BuildIPVSImage(ctx, b.TempDir())
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		console, err := vm.Boot(ctx, k, initramfs, "kubox.test=bench", 2048)
		cancel()
		checks, figures, done := vm.Parse(console)
		if err != nil || !done {
			b.Fatalf("VM: %v (finished: %v); console:\n%s", err, done, console)
		}
		for _, c := range checks {
			if !c.Pass {
				b.Errorf("FAIL %s: %s", c.Name, c.Detail)
			}
		}
		for key, what := range map[string]string{
			"program-1000x10-ms": "ipvs (emulated VM): program 1000 Services x 10 endpoints",
			"endpoint-change-ms": "ipvs (emulated VM): one endpoint change to the kernel",
		} {
			v, err := strconv.ParseFloat(strings.Fields(figures[key] + " x")[0], 64)
			if err != nil {
				b.Fatalf("no %s figure from the VM; console:\n%s", key, console)
			}
			report(b, what, v, "ms")
		}
	}
}
