package bench

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubox/kubox/test/harness"
)

// BenchmarkDNSMemory measures what in-process cluster DNS adds to kubox:
// the kubox process's RSS and PSS, idle after Node Ready, with
// --disable-dns and with DNS on (after answering some queries). A CoreDNS
// pod, what other distributions run instead, takes about 70 MB.
func BenchmarkDNSMemory(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		off := kuboxIdleMemory(b, env, false)
		on := kuboxIdleMemory(b, env, true)
		report(b, "kubox process RSS, DNS off (idle)", mib(off.RSS), "MiB")
		report(b, "kubox process PSS, DNS off (idle)", mib(off.PSS), "MiB")
		report(b, "kubox process RSS, DNS on (idle)", mib(on.RSS), "MiB")
		report(b, "kubox process PSS, DNS on (idle)", mib(on.PSS), "MiB")
		report(b, "RSS added by DNS", mib(on.RSS-off.RSS), "MiB")
		report(b, "PSS added by DNS", mib(on.PSS-off.PSS), "MiB")
	}
}

// kuboxIdleMemory starts a fresh node, waits for Node Ready and 60 s of
// idling (with DNS: after 2000 queries), and returns the mean of five
// samples of the kubox process's memory, 2 s apart.
func kuboxIdleMemory(b *testing.B, env harness.Env, withDNS bool) harness.Memory {
	args := []string{"--dns-port", "1053"}
	if !withDNS {
		args = []string{"--disable-dns"}
	}
	n := harness.NewNode(b, env, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	begin := time.Now()
	n.Start()
	if err := n.WaitNodeReadyFast(ctx, begin); err != nil {
		b.Fatal(err)
	}
	if withDNS {
		ip, err := n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
		if err != nil {
			b.Fatal(err)
		}
		addr := net.JoinHostPort(strings.TrimSpace(ip), "1053")
		names := []string{"kubernetes.default.svc.cluster.local.", "kube-dns.kube-system.svc.cluster.local.", "missing.default.svc.cluster.local."}
		c := &dns.Client{Timeout: 2 * time.Second}
		qbegin := time.Now()
		const queries = 2000
		for q := 0; q < queries; q++ {
			m := new(dns.Msg)
			m.SetQuestion(names[q%len(names)], dns.TypeA)
			if _, _, err := c.ExchangeContext(ctx, m, addr); err != nil {
				b.Fatalf("query %d: %v", q, err)
			}
		}
		report(b, fmt.Sprintf("%d sequential cluster DNS queries", queries), time.Since(qbegin).Seconds(), "s")
	}
	time.Sleep(60 * time.Second)
	var sum harness.Memory
	const samples = 5
	for s := 0; s < samples; s++ {
		_, per, err := harness.TreeMemory(n.Pid())
		if err != nil {
			b.Fatal(err)
		}
		m, ok := per[fmt.Sprintf("kubox server[%d]", n.Pid())]
		if !ok {
			b.Fatalf("no kubox process among %v", per)
		}
		sum.RSS += m.RSS
		sum.PSS += m.PSS
		time.Sleep(2 * time.Second)
	}
	if _, err := n.Stop(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	return harness.Memory{RSS: sum.RSS / samples, PSS: sum.PSS / samples}
}
