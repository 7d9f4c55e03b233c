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
// plan: the supervisor starts in order, so that is what makes it hold.
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
		"dns<apiserver>",
		"proxy<apiserver>",
		"csr-approver<apiserver>",
		"containerd<>",
		"airgap<containerd>",
		"network-policy<apiserver>",
		"kubelet<apiserver,containerd,csr-approver,proxy,network-policy>",
		"network<controller-manager,kubelet>",
		"pod-routes<apiserver>",
		"local-path<apiserver>",
		"manifests<apiserver>",
		"backup<apiserver>",
		"certs<>",
		"metrics<>",
	}
	if got := describe(steps); !slices.Equal(got, want) {
		t.Errorf("plan:\n got %v\nwant %v", got, want)
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
	want := []string{"disk<>", "etcd<>", "etcd-space<etcd>", "etcd-promote<etcd>", "etcd-proxy<etcd>", "apiserver<etcd-proxy,etcd-space>", "join-bundle<apiserver>"}
	if !slices.Equal(got[:len(want)], want) {
		t.Errorf("plan starts:\n got %v\nwant %v", got[:len(want)], want)
	}
	needsComeFirst(t, steps)
}

// A control-plane-only box without DNS or metrics runs no agent parts.
func TestPlanControlPlaneOnly(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) {
		c.DisableAgent, c.DisableDNS, c.MetricsAddress = true, true, "none"
	})
	want := []string{"disk<>", "etcd<>", "etcd-space<etcd>", "apiserver<etcd,etcd-space>", "join-bundle<apiserver>", "controller-manager<apiserver>", "scheduler<apiserver>", "manifests<apiserver>", "backup<apiserver>", "certs<>"}
	if got := describe(steps); !slices.Equal(got, want) {
		t.Errorf("plan:\n got %v\nwant %v", got, want)
	}
}

// Without the service proxy the kubelet no longer waits for it.
func TestPlanWithoutProxy(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) { c.Proxy.Disable = true })
	got := describe(steps)
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "proxy<") }) {
		t.Errorf("plan has a proxy although it is disabled: %v", got)
	}
	if !slices.Contains(got, "kubelet<apiserver,containerd,csr-approver,network-policy>") {
		t.Errorf("kubelet needs: %v", got)
	}
	needsComeFirst(t, steps)
}

// Without network policies there is no controller and the kubelet does not
// wait for one.
func TestPlanWithoutNetworkPolicy(t *testing.T) {
	steps, _ := planFor(t, func(c *Config, in *prepared) { c.DisableNetworkPolicy = true })
	got := describe(steps)
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "network-policy<") }) {
		t.Errorf("plan has a network policy controller although it is disabled: %v", got)
	}
	if !slices.Contains(got, "kubelet<apiserver,containerd,csr-approver,proxy>") {
		t.Errorf("kubelet needs: %v", got)
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
