package scheduler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A kubeconfig that names a server nobody listens on: Init builds clients
// but must not talk to the apiserver.
const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

// The lease is upstream's, with upstream's timings, and its identity names
// this box.
func TestInitElectsOnUpstreamsLease(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Kubeconfig: kc, NodeName: "box1"})
	if err := c.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := c.election
	if e.Namespace != "kube-system" || e.Name != "kube-scheduler" {
		t.Fatalf("lease %s/%s", e.Namespace, e.Name)
	}
	if e.LeaseDuration != 15*time.Second || e.RenewDeadline != 10*time.Second || e.RetryPeriod != 2*time.Second {
		t.Fatalf("timings %v %v %v, want upstream's 15s 10s 2s", e.LeaseDuration, e.RenewDeadline, e.RetryPeriod)
	}
	if !strings.HasPrefix(e.Identity, "box1_") || len(e.Identity) < len("box1_")+32 {
		t.Fatalf("identity %q", e.Identity)
	}
	if c.opts.LeaderElection.LeaderElect {
		t.Fatal("upstream's own election is on: it exits the process on a lost lease")
	}
}
