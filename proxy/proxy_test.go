package proxy

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/kubernetes/pkg/proxy/iptables"
	"k8s.io/kubernetes/pkg/proxy/ipvs"
	"k8s.io/kubernetes/pkg/proxy/nftables"
	"k8s.io/kubernetes/pkg/proxy/runner"

	"github.com/kubox/kubox/proxy/mode"
)

func validConfig() Config {
	_, cidr, _ := net.ParseCIDR("10.42.0.0/16")
	return Config{
		NodeName: "box", NodeIP: net.ParseIP("192.0.2.10"), ClusterCIDR: cidr,
		Client: fake.NewClientset(),
	}
}

func TestValidate(t *testing.T) {
	if c := validConfig(); c.Validate() != nil {
		t.Fatal(c.Validate())
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"bad mode", func(c *Config) { c.Mode = "userspace" }, "--proxy-mode"},
		{"bad scheduler", func(c *Config) { c.Scheduler = "fifo" }, "--ipvs-scheduler"},
		{"IPv6 node IP", func(c *Config) { c.NodeIP = net.ParseIP("fd00::1") }, "not an IPv4 address"},
		{"no cluster CIDR", func(c *Config) { c.ClusterCIDR = nil }, "cluster CIDR"},
		{"no client", func(c *Config) { c.Client = nil }, "no API client"},
		{"negative sync", func(c *Config) { c.SyncPeriod = -1 }, "must not be negative"},
		{"min sync above sync", func(c *Config) { c.SyncPeriod, c.MinSyncPeriod = 1e9, 2e9 }, "--proxy-min-sync-period"},
		{"bad NodePort CIDR", func(c *Config) { c.NodePortAddresses = []string{"192.168.1.1"} }, "--nodeport-addresses"},
		{"IPv6 NodePort CIDR", func(c *Config) { c.NodePortAddresses = []string{"fd00::/64"} }, "--nodeport-addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line containing %q", err, tc.want)
			}
		})
	}
}

// Forcing ipvs on a kernel without it fails in Init, before anything runs,
// with the one line the operator needs.
func TestInitForcedIPVSWithoutIPVS(t *testing.T) {
	c := validConfig()
	c.Mode = mode.IPVS
	c.Host = &mode.Host{NFT: true, IPTables: true, IPSet: true, Schedulers: map[string]bool{}}
	p := New(c)
	err := p.Init(context.Background())
	if err == nil || err.Error() != "proxy mode ipvs: kernel has no ip_vs; load the modules (modprobe ip_vs ip_vs_rr) and install ipset and iptables, or use --proxy-mode auto or nftables" {
		t.Fatalf("Init: %v", err)
	}
}

func TestInitAuto(t *testing.T) {
	c := validConfig()
	c.Host = &mode.Host{NFT: true, IPTables: true, Schedulers: map[string]bool{}}
	p := New(c)
	if err := p.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.Choice().String(); got != "nftables: kernel has no ip_vs" {
		t.Fatalf("choice %q", got)
	}
	if p.cfg.NodePortAddresses[0] != "192.0.2.10/32" || p.cfg.Scheduler != "rr" || p.cfg.SyncPeriod != DefaultSyncPeriod {
		t.Errorf("defaults: %+v", p.cfg)
	}
}

// kubox stops upstream's sync loop through the proxiers' syncRunner field;
// an upgrade that renames it must fail here, not leak a loop that re-creates
// rules after a cleanup.
func TestProxiersHaveSyncRunner(t *testing.T) {
	want := reflect.TypeOf((*runner.BoundedFrequencyRunner)(nil))
	for _, typ := range []reflect.Type{
		reflect.TypeOf(nftables.Proxier{}), reflect.TypeOf(iptables.Proxier{}), reflect.TypeOf(ipvs.Proxier{}),
	} {
		f, ok := typ.FieldByName("syncRunner")
		if !ok || f.Type != want {
			t.Errorf("%s has no syncRunner *runner.BoundedFrequencyRunner field", typ)
		}
	}
}
