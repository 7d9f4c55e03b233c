package network

import (
	"context"
	"net"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func TestNFTRules(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("10.42.0.0/16")
	nft := knftables.NewFake(knftables.IPv4Family, NFTTable)
	// Twice: a restart replaces the rules instead of adding to them.
	for i := 0; i < 2; i++ {
		tx := nft.NewTransaction()
		nftRules(tx, cidr, VXLANDevice)
		if err := nft.Run(context.Background(), tx); err != nil {
			t.Fatal(err)
		}
	}
	dump := nft.Dump()
	for _, want := range []string{
		"add chain ip kubox postrouting { type nat hook postrouting priority 100 ; }",
		"add rule ip kubox postrouting ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade",
		"add chain ip kubox forward { type filter hook forward priority -150 ; }",
		`add rule ip kubox forward oifname "kubox-vxlan" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, dump)
		}
	}
	if n := strings.Count(dump, "add rule ip kubox postrouting"); n != 1 {
		t.Errorf("%d masquerade rules after two runs, want 1:\n%s", n, dump)
	}
}

func TestIPTRules(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("10.42.0.0/16")
	chains, jumps := iptRules(cidr, VXLANDevice)
	var got []string
	for _, r := range append(chains, jumps...) {
		got = append(got, strings.Join(append([]string{"-t", string(r.table), "-A", string(r.chain)}, r.args...), " "))
	}
	want := []string{
		"-t nat -A KUBOX-POSTROUTING -d 10.42.0.0/16 -j RETURN",
		"-t nat -A KUBOX-POSTROUTING -d 224.0.0.0/4 -j RETURN",
		"-t nat -A KUBOX-POSTROUTING -j MASQUERADE",
		"-t mangle -A KUBOX-FORWARD -o kubox-vxlan -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
		"-t nat -A POSTROUTING -s 10.42.0.0/16 -j KUBOX-POSTROUTING",
		"-t mangle -A FORWARD -j KUBOX-FORWARD",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("iptables rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
