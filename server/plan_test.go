package server

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubox/kubox/bootstrap"
)

// planFor plans a node whose data and run dirs do not exist: plan must not
// need them, and must not create them.
func planFor(t *testing.T, change func(*Config, *prepared)) ([]step, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "absent")
	c := validConfig(t)
	c.DataDir, c.RunDir = filepath.Join(root, "data"), filepath.Join(root, "run")
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	in := &prepared{cfg: c, paths: p, log: slog.New(slog.DiscardHandler), pki: bootstrap.Layout(p.PKI, p.Kubeconfigs)}
	if change != nil {
		change(&in.cfg, in)
	}
	steps, err := plan(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("plan touched the disk: %s exists (%v)", root, err)
	}
	return steps, root
}

// describe renders a plan as "name<needs,...>" in order.
func describe(steps []step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Name() + "<" + strings.Join(s.needs, ",") + ">"
	}
	return out
}

// needsComeFirst checks that every need names a component earlier in the
// plan: the supervisor refuses a plan where one does not.
func needsComeFirst(t *testing.T, steps []step) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range steps {
		for _, n := range s.needs {
			if !seen[n] {
				t.Errorf("%s needs %s, which is not started before it", s.Name(), n)
			}
		}
		if seen[s.Name()] {
			t.Errorf("%s is in the plan twice", s.Name())
		}
		seen[s.Name()] = true
	}
}

// afterEtcd checks that every component but the disk guard and etcd needs
// etcd, directly or through another: the start is parallel, and a box whose
// etcd refuses to start (removed, stale) must start nothing else.
func afterEtcd(t *testing.T, steps []step) {
	t.Helper()
	gated := map[string]bool{"etcd": true}
	for _, s := range steps {
		for _, n := range s.needs {
			if gated[n] {
				gated[s.Name()] = true
			}
		}
		if !gated[s.Name()] && s.Name() != "disk" {
			t.Errorf("%s can start before etcd serves", s.Name())
		}
	}
}

func TestPlanSingleBox(t *testing.T) {
	steps, _ := planFor(t, nil)
	want := []string{
		"disk<>",
		"etcd<>",
		"etcd-space<etcd>",
		"apiserver<etcd,etcd-space>",
		"join-bundle<apiserver>",
		"controller-manager<apiserver>",
		"scheduler<apiserver>",
		"metrics-api<apiserver>",
		"dns<apiserver>",
		"proxy-setup<etcd>",
		"proxy<apiserver,proxy-setup>",
		"csr-approver<apiserver>",
		"runtime-binaries<etcd>",
		"containerd<runtime-binaries>",
		"airgap<containerd>",
		"network-policy<apiserver>",
		"kubelet<apiserver,containerd,csr-approver>",
		"network<controller-manager,proxy,network-policy>",
		"pod-routes<apiserver>",
		"local-path<apiserver>",
		"manifests<apiserver>",
		"backup<apiserver>",
		"certs<etcd>",
		"metrics<etcd>",
	}
	if got := describe(steps); !slices.Equal(got, want) {
		t.Errorf("plan:\n got %v\nwant %v", got, want)
	}
	needsComeFirst(t, steps)
	afterEtcd(t, steps)
}

// A restart finds the CNI config of the run before, with which pods get a
// network at once: there the kubelet waits for the service proxy and the
// network policies too. (On a fresh box the pod network waits for them.)
func TestPlanRestartKubeletAfterProxyAndPolicies(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) {
		in.paths.CNIConf = t.TempDir()
		if err := os.WriteFile(filepath.Join(in.paths.CNIConf, "10-kubox.conflist"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	got := describe(steps)
	for _, want := range []string{"kubelet<apiserver,containerd,csr-approver,proxy,network-policy>", "network<controller-manager,proxy,network-policy>"} {
		if !slices.Contains(got, want) {
			t.Errorf("restart plan lacks %s: %v", want, got)
		}
	}
	needsComeFirst(t, steps)
}

// A box that joins reaches etcd through the etcd proxy, and a box joining
// as a voter promotes its learner first.
func TestPlanJoiningBox(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	steps, _ := planFor(t, func(c *Config, in *prepared) {
		in.join = &joinResult{initialCluster: "box-0=https://192.0.2.9:2380,box-1=https://192.0.2.10:2380", promote: true}
		in.etcdProxy = ln
	})
	got := describe(steps)
	want := []string{"disk<>", "etcd<>", "etcd-space<etcd>", "etcd-promote<etcd>", "etcd-proxy<etcd,etcd-promote>", "apiserver<etcd-proxy,etcd-space>", "join-bundle<apiserver>"}
	if !slices.Equal(got[:len(want)], want) {
		t.Errorf("plan starts:\n got %v\nwant %v", got[:len(want)], want)
	}
	needsComeFirst(t, steps)
	afterEtcd(t, steps)
}

// A control-plane-only box without DNS or metrics runs no agent parts.
func TestPlanControlPlaneOnly(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) {
		c.DisableAgent, c.DisableDNS, c.MetricsAddress = true, true, "none"
	})
	want := []string{"disk<>", "etcd<>", "etcd-space<etcd>", "apiserver<etcd,etcd-space>", "join-bundle<apiserver>", "controller-manager<apiserver>", "scheduler<apiserver>", "metrics-api<apiserver>", "manifests<apiserver>", "backup<apiserver>", "certs<etcd>"}
	if got := describe(steps); !slices.Equal(got, want) {
		t.Errorf("plan:\n got %v\nwant %v", got, want)
	}
}

// Without the service proxy the pod network no longer waits for it.
func TestPlanWithoutProxy(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) { c.Proxy.Disable = true })
	got := describe(steps)
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "proxy<") || strings.HasPrefix(s, "proxy-setup<") }) {
		t.Errorf("plan has a proxy although it is disabled: %v", got)
	}
	if !slices.Contains(got, "network<controller-manager,network-policy>") {
		t.Errorf("pod network needs: %v", got)
	}
	needsComeFirst(t, steps)
}

// Without network policies there is no controller and the pod network does
// not wait for one.
func TestPlanWithoutNetworkPolicy(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) { c.DisableNetworkPolicy = true })
	got := describe(steps)
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "network-policy<") }) {
		t.Errorf("plan has a network policy controller although it is disabled: %v", got)
	}
	if !slices.Contains(got, "network<controller-manager,proxy>") {
		t.Errorf("pod network needs: %v", got)
	}
	needsComeFirst(t, steps)
}

// A prepare that fails returns its error, undone, and no half-prepared
// start: a refused join (malformed token) and a failure after the etcd
// proxy's listener was bound (a missing air-gap key on a joined box).
func TestPrepareFailsCleanly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"refused join", func(c *Config) {
			c.JoinURL, c.Token = "https://192.0.2.99:6443", "K10"+strings.Repeat("z", 64)+"::abcdef.0123456789abcdef"
		}, "join token"},
		{"after the listener", func(c *Config) {
			if err := os.WriteFile(c.Paths().JoinState, []byte(`{"peers":[]}`), 0o600); err != nil {
				t.Fatal(err)
			}
			c.AirgapPublicKeyFile = filepath.Join(c.DataDir, "absent.pub")
		}, "absent.pub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			c.DataDir, c.RunDir, c.WriteKubeconfig = t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "admin.kubeconfig")
			if err := completeValid(&c); err != nil {
				t.Fatal(err)
			}
			tc.change(&c)
			s, _ := New(c, slog.New(slog.DiscardHandler))
			in, undo, err := s.prepare(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("prepare: %v, want an error mentioning %q", err, tc.want)
			}
			if in != nil || undo != nil {
				t.Errorf("a failed prepare returned a start to run: %v", in)
			}
		})
	}
}

// With the metrics API off, nothing scrapes and the apiserver installs no
// group; a one-shot removes kubox's APIService instead.
func TestPlanWithoutMetricsAPI(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) { c.DisableMetricsAPI = true })
	got := describe(steps)
	if slices.Contains(got, "metrics-api<apiserver>") || !slices.Contains(got, "metrics-api-off<apiserver>") {
		t.Errorf("plan with the metrics API off: %v", got)
	}
	needsComeFirst(t, steps)
}
