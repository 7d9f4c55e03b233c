package dns

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: x}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`

// newTestDNS returns a DNS whose files live in a temp dir: a resolv.conf
// with the given body and, unless override is "", an override file.
func newTestDNS(t *testing.T, resolv, override string) *DNS {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := Config{
		NodeName: "n1", NodeIP: net.ParseIP("127.0.0.1"), Port: 1053,
		ClusterDNS: net.ParseIP("10.43.0.10"), ClusterDomain: "cluster.local",
		Kubeconfig:   write("kubeconfig", testKubeconfig),
		ResolvConf:   write("resolv.conf", resolv),
		HostsFile:    write("hosts", "192.0.2.7 box.site\n"),
		OverrideFile: filepath.Join(dir, "dns.conf"),
		CorefilePath: filepath.Join(dir, "out", "Corefile"),
	}
	if override != "" {
		write("dns.conf", override)
	}
	return New(cfg)
}

func TestInitDefaultCorefileIsValid(t *testing.T) {
	d := newTestDNS(t, "search example\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n", "")
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(d.cfg.CorefilePath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	for _, want := range []string{".:1053 {", "bind 127.0.0.1", "kubernetes cluster.local in-addr.arpa ip6.arpa", "forward . 127.0.0.53 192.0.2.1", "hosts " + d.cfg.HostsFile, "cache 30 {\n        disable success cluster.local\n", "reload 30s"} {
		if !strings.Contains(s, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, s)
		}
	}
}

func TestInitWithExtraZones(t *testing.T) {
	override := `# the site's own DNS
site.example {
    forward . 192.0.2.53 {
        max_fails 2
    }
    cache 10
}
10.in-addr.arpa:1053 {
    forward . 192.0.2.53
}
`
	d := newTestDNS(t, "nameserver 192.0.2.1\n", override)
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(d.cfg.CorefilePath)
	s := string(body)
	for _, want := range []string{"site.example:1053 {\n    bind 127.0.0.1\n", "    cache 10\n", "    forward . 192.0.2.53 {\n        max_fails 2\n    }\n", "10.in-addr.arpa:1053 {"} {
		if !strings.Contains(s, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, s)
		}
	}
}

func TestOverrideErrors(t *testing.T) {
	for _, tc := range []struct{ name, override, want string }{
		{"syntax", "site.example {\n  forward . 192.0.2.53\n", "dns.conf"},
		{"unknown plugin", "site.example {\n  rewrite name a b\n}\n", `dns.conf:2: plugin "rewrite" is not built into kubox`},
		// loop would exit the whole process on finding a loop.
		{"loop plugin", "site.example {\n  forward . 192.0.2.53\n  loop\n}\n", `dns.conf:3: plugin "loop" is not built into kubox`},
		{"not a plugin at all", "site.example {\n  frobnicate\n}\n", "dns.conf"},
		{"other port", "site.example:5300 {\n  forward . 192.0.2.53\n}\n", "names port 5300"},
		{"root zone", ". {\n  forward . 192.0.2.53\n}\n", "kubox's own"},
		{"cluster zone", "cluster.local {\n  forward . 192.0.2.53\n}\n", "kubox's own"},
		{"bind", "site.example {\n  bind 0.0.0.0\n  forward . 192.0.2.53\n}\n", "remove `bind`"},
		{"transport", "tls://site.example {\n  forward . 192.0.2.53\n}\n", "only plain DNS zones"},
		{"bad forward args", "site.example {\n  forward . not-an-address\n}\n", "not-an-address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDNS(t, "nameserver 192.0.2.1\n", tc.override)
			err := d.Init(context.Background())
			if err == nil {
				t.Fatalf("Init accepted %q", tc.override)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, tc.want)
			}
			if _, err := os.Stat(d.cfg.CorefilePath); err == nil {
				t.Errorf("a Corefile was written for a rejected override")
			}
		})
	}
}

func TestUpstreamsDropLoops(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	body := "nameserver 10.43.0.10\nnameserver 192.0.2.9\n# nameserver 192.0.2.8\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions ndots:2\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	self := net.ParseIP("192.0.2.9")
	ups, dropped, err := Upstreams(p, self, 53, net.ParseIP("10.43.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ups, ",") != "127.0.0.53,fe80::1%eth0" || strings.Join(dropped, ",") != "10.43.0.10,192.0.2.9" {
		t.Errorf("ups %v dropped %v", ups, dropped)
	}
	// On another port, the node's own address on 53 is someone else.
	ups, _, _ = Upstreams(p, self, 1053, net.ParseIP("10.43.0.10"))
	if strings.Join(ups, ",") != "192.0.2.9,127.0.0.53,fe80::1%eth0" {
		t.Errorf("port 1053: ups %v", ups)
	}
	if ups, _, err := Upstreams(filepath.Join(dir, "missing"), self, 53, nil); err != nil || len(ups) != 0 {
		t.Errorf("missing resolv.conf: %v %v, want no upstreams", ups, err)
	}
	if _, _, err := Upstreams(dir, self, 53, nil); err == nil {
		t.Error("a directory read as resolv.conf")
	}
}

func TestNoUpstreamsNoForward(t *testing.T) {
	d := newTestDNS(t, "nameserver 10.43.0.10\n", "")
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(d.cfg.CorefilePath)
	if strings.Contains(string(body), "forward") || strings.Contains(string(body), "loop") {
		t.Errorf("forward/loop with no usable upstream:\n%s", body)
	}
}

func TestPodResolvConf(t *testing.T) {
	dir := t.TempDir()
	stub := filepath.Join(dir, "stub")
	real := filepath.Join(dir, "real")
	mixed := filepath.Join(dir, "mixed")
	for p, body := range map[string]string{stub: "nameserver 127.0.0.53\n", real: "nameserver 192.0.2.53\n", mixed: "nameserver 127.0.0.1\nnameserver 192.0.2.53\n"} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := PodResolvConf(stub, real); got != real {
		t.Errorf("loopback-only: %s, want the fallback", got)
	}
	if got := PodResolvConf(stub, filepath.Join(dir, "missing")); got != stub {
		t.Errorf("loopback-only without fallback: %s", got)
	}
	if got := PodResolvConf(mixed, real); got != mixed {
		t.Errorf("mixed: %s, want it kept", got)
	}
}
