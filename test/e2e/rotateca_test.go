package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// pemCerts parses every certificate in a PEM file.
func pemCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// servedChainVerifies reports whether the chain served at addr verifies
// against root alone.
func servedChainVerifies(t *testing.T, addr string, root *x509.Certificate) bool {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err == nil
}

// waitKubeletProxy waits until the apiserver reaches the kubelet over TLS
// (verifying its serving cert against the cluster CA bundle).
func waitKubeletProxy(ctx context.Context, t *testing.T, n *harness.Node, node string) {
	t.Helper()
	var last error
	for range 120 {
		out, err := n.Kubectl(ctx, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/healthz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			return
		}
		last = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("apiserver -> kubelet on %s: %v", node, last)
}

func restart(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	n.Start()
	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := n.WaitNodeReady(waitCtx); err != nil {
		t.Fatal(err)
	}
}

// TestRotateCA rotates the CAs of a stopped server in two steps. Stopped,
// because every in-process component (and etcd) loads its trust bundles at
// start: the documented procedure restarts kubox after each step anyway,
// and a stopped server makes each step's effect deterministic.
func TestRotateCA(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env)
	restart(ctx, t, n)
	node, err := n.Kubectl(ctx, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(n.DataDir, "pki", "ca.crt")
	oldCA := pemCerts(t, caFile)[0]
	oldKC := filepath.Join(n.Root, "old-admin.kubeconfig")
	data, err := os.ReadFile(n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldKC, data, 0o600); err != nil {
		t.Fatal(err)
	}
	oldKubectl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, env.Kubectl, append([]string{"--kubeconfig", oldKC}, args...)...).CombinedOutput()
		return string(out), err
	}
	if _, _, code := kubox(t, env, "certs", "rotate-ca", "--finish", "--data-dir", n.DataDir); code == 0 {
		t.Error("rotate-ca --finish without a rotation succeeded")
	}
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Step 1: new CAs, old ones still trusted.
	out := mustKubox(t, env, "certs", "rotate-ca", "--data-dir", n.DataDir)
	t.Logf("certs rotate-ca:\n%s", out)
	if strings.Count(out, "still trusted") != 5 {
		t.Errorf("rotate-ca did not report five CAs: %q", out)
	}
	if _, errOut, code := kubox(t, env, "certs", "rotate-ca", "--data-dir", n.DataDir); code == 0 || !strings.Contains(errOut, "--finish") {
		t.Errorf("second rotate-ca: exit %d, %q; want a refusal naming --finish", code, errOut)
	}
	restart(ctx, t, n)
	bundle := pemCerts(t, caFile)
	if len(bundle) != 2 || !bundle[1].Equal(oldCA) {
		t.Fatalf("ca.crt holds %d certs during the transition, want new + old", len(bundle))
	}
	newCA := bundle[0]
	if !servedChainVerifies(t, "127.0.0.1:6443", newCA) || !servedChainVerifies(t, "127.0.0.1:6443", oldCA) {
		t.Errorf("during the transition the apiserver's chain must verify against the new CA and the old CA alone")
	}
	if out, err := oldKubectl("get", "nodes"); err != nil {
		t.Errorf("old admin kubeconfig during the transition: %v: %s", err, out)
	}
	waitKubeletProxy(ctx, t, n, node)
	nodeIP := servedNodeIP(t, ctx, n)
	if !servedChainVerifies(t, net.JoinHostPort(nodeIP, "10250"), newCA) {
		t.Errorf("kubelet serving cert is not from the new cluster CA")
	}
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Step 2: only the new CAs.
	out = mustKubox(t, env, "certs", "rotate-ca", "--finish", "--data-dir", n.DataDir)
	t.Logf("certs rotate-ca --finish:\n%s", out)
	restart(ctx, t, n)
	if b := pemCerts(t, caFile); len(b) != 1 || !b[0].Equal(newCA) {
		t.Fatalf("ca.crt holds %d certs after --finish, want the new CA only", len(b))
	}
	if servedChainVerifies(t, "127.0.0.1:6443", oldCA) || !servedChainVerifies(t, "127.0.0.1:6443", newCA) {
		t.Errorf("after --finish the apiserver's chain must verify against the new CA only")
	}
	if out, err := oldKubectl("get", "nodes"); err == nil {
		t.Errorf("old admin kubeconfig still works after --finish: %s", out)
	}
	waitKubeletProxy(ctx, t, n, node)
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
