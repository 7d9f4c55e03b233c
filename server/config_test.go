package server

import (
	"net"
	"strings"
	"testing"
	"time"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func validConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.NodeName = "Box-1"
	c.NodeIP = net.ParseIP("192.0.2.10").To4()
	return c
}

// completeValid completes c and validates it, as `kubox server` does.
func completeValid(c *Config) error {
	if err := c.Complete(); err != nil {
		return err
	}
	return c.Validate()
}

func TestCompleteDefaults(t *testing.T) {
	c := validConfig(t)
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "box-1" {
		t.Errorf("node name %q, want lower-cased", c.NodeName)
	}
	if c.ClusterDNS.String() != "10.43.0.10" {
		t.Errorf("cluster DNS %s, want 10.43.0.10", c.ClusterDNS)
	}
	if c.DataDir != "/var/lib/kubox" || c.RunDir != "/run/kubox" || c.HTTPSPort != 6443 || c.EtcdClientPort != 2379 || c.KubeletPort != 10250 {
		t.Errorf("defaults: %+v", c)
	}
	if p := c.Paths(); p.ContainerdSock != "/run/kubox/containerd/containerd.sock" || p.Lock != "/var/lib/kubox/kubox.lock" {
		t.Errorf("paths: %+v", p)
	}
	if c.StorageDir != "/var/lib/kubox/storage" {
		t.Errorf("storage dir %q, want <data-dir>/storage", c.StorageDir)
	}
}

func TestCompleteRejects(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"loopback node IP", func(c *Config) { c.NodeIP = net.ParseIP("127.0.0.1") }, "--node-ip"},
		{"overlapping CIDRs", func(c *Config) { c.ServiceCIDR = mustCIDR(t, "10.42.128.0/20") }, "overlap"},
		{"cluster CIDR too small", func(c *Config) { c.ClusterCIDR = mustCIDR(t, "10.42.0.0/25") }, "/24 or larger"},
		{"IPv6 cluster CIDR", func(c *Config) { c.ClusterCIDR = mustCIDR(t, "fd00::/48") }, "IPv4"},
		{"service CIDR too small", func(c *Config) { c.ServiceCIDR = mustCIDR(t, "10.43.0.0/30") }, "/28 or larger"},
		{"DNS outside services", func(c *Config) { c.ClusterDNS = net.ParseIP("10.99.0.10").To4() }, "outside --service-cidr"},
		{"bad port", func(c *Config) { c.HTTPSPort = 70000 }, "--https-port"},
		{"etcd quota too small", func(c *Config) { c.EtcdQuotaBytes = 1 << 20 }, "--etcd-quota-bytes 1048576"},
		{"etcd quota too large", func(c *Config) { c.EtcdQuotaBytes = 64 << 30 }, "8 GiB"},
		{"bad DNS allowed range", func(c *Config) { c.DNSAllowCIDRs = []string{"192.0.2.0/24", "lan"} }, `--dns-allow-cidrs "lan"`},
		{"unsigned bundles required and allowed", func(c *Config) {
			c.AirgapPublicKeyFile, c.AirgapRequireSignature, c.AirgapAllowUnsigned = "/k.pub", true, true
		}, "contradict"},
		{"relative storage dir", func(c *Config) { c.StorageDir = "storage" }, "--storage-dir"},
		{"relative manifests dir", func(c *Config) { c.ManifestsDir = "manifests" }, "--manifests-dir"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.change(&c)
			err := completeValid(&c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Complete+Validate = %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestNthIP(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		n    int
		want string
	}{{"10.43.0.0/16", 1, "10.43.0.1"}, {"10.43.0.0/16", 10, "10.43.0.10"}, {"10.43.0.0/16", 300, "10.43.1.44"}} {
		if got := NthIP(mustCIDR(t, tc.cidr), tc.n).String(); got != tc.want {
			t.Errorf("NthIP(%s, %d) = %s, want %s", tc.cidr, tc.n, got, tc.want)
		}
	}
}

func TestLockIsExclusive(t *testing.T) {
	path := t.TempDir() + "/kubox.lock"
	l, err := AcquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open in the
	// same process conflicts just as another process would.
	if _, err := AcquireLock(path); err == nil || !strings.Contains(err.Error(), "in use by another kubox") {
		t.Fatalf("second lock: %v", err)
	}
	l.Release()
	l2, err := AcquireLock(path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Release()
}

func TestCompleteProxy(t *testing.T) {
	c := validConfig(t)
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	if c.Proxy.Mode != "auto" || c.Proxy.IPVSScheduler != "rr" || c.Proxy.SyncPeriod.String() != "30s" {
		t.Errorf("proxy defaults: %+v", c.Proxy)
	}
	for _, tc := range []struct {
		name   string
		change func(*ProxySettings)
		want   string
	}{
		{"mode", func(p *ProxySettings) { p.Mode = "ebpf" }, "--proxy-mode \"ebpf\": must be auto, ipvs, nftables or iptables"},
		{"scheduler", func(p *ProxySettings) { p.IPVSScheduler = "mh" }, "--ipvs-scheduler \"mh\""},
		{"sync", func(p *ProxySettings) { p.SyncPeriod = -time.Second }, "--proxy-sync-period"},
		{"min sync", func(p *ProxySettings) { p.MinSyncPeriod = time.Hour }, "--proxy-min-sync-period"},
		{"nodeport addresses", func(p *ProxySettings) { p.NodePortAddresses = []string{"eth0"} }, "--nodeport-addresses \"eth0\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.change(&c.Proxy)
			if err := completeValid(&c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// Validate only checks: a config that fails it is left as it was.
func TestValidateChangesNothing(t *testing.T) {
	c := validConfig(t)
	c.NodeName = "Box-1"
	c.ClusterDNS = nil
	c.HTTPSPort = 0
	if err := c.Validate(); err == nil {
		t.Fatal("Validate accepted a config without cluster DNS and with port 0")
	}
	if c.NodeName != "Box-1" || c.ClusterDNS != nil || c.HTTPSPort != 0 {
		t.Errorf("Validate changed the config: %+v", c)
	}
}

// Ports is the one list the preflight and kubox check test: the DNS port
// is in it unless DNS is off, the kubelet's unless the agent is.
func TestPortsFollowConfig(t *testing.T) {
	c := validConfig(t)
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	has := func(ps []Port, what string) bool {
		for _, p := range ps {
			if p.What == what {
				return true
			}
		}
		return false
	}
	ps := c.Ports()
	for _, what := range []string{"apiserver", "etcd client", "etcd peer", "kubelet", "kubox metrics", "cluster DNS"} {
		if !has(ps, what) {
			t.Errorf("Ports() lacks %s: %+v", what, ps)
		}
	}
	c.DisableDNS, c.DisableAgent, c.MetricsAddress = true, true, "none"
	ps = c.Ports()
	for _, what := range []string{"cluster DNS", "kubelet", "kubox metrics"} {
		if has(ps, what) {
			t.Errorf("Ports() has %s although it is off: %+v", what, ps)
		}
	}
}
