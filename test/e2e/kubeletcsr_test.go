package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// assertKubeletServingCSR checks that the kubelet serves a certificate it
// got through a CertificateSigningRequest that kubox approved and the
// controller-manager signed with the cluster CA (so the apiserver, which
// verifies kubelets against that CA, can run logs/exec), and that kubox
// leaves a kubelet-serving request for a node it does not run alone.
func assertKubeletServingCSR(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	node, err := n.Kubectl(ctx, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(n.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("cluster CA: no PEM")
	}
	ip := servedNodeIP(t, ctx, n)
	served := servedCert(t, net.JoinHostPort(ip, "10250"))
	if _, err := served.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("kubelet serving cert (%s, issuer %s) does not chain to the cluster CA: %v", served.Subject, served.Issuer, err)
	}
	if err := served.VerifyHostname(ip); err != nil || served.Subject.CommonName != "system:node:"+node {
		t.Errorf("kubelet serving cert %s for %v %v: want system:node:%s with IP %s (%v)", served.Subject, served.DNSNames, served.IPAddresses, node, ip, err)
	}
	out, err := n.Kubectl(ctx, "get", "csr", "-o",
		`jsonpath={range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].type} {.status.conditions[0].reason}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kubernetes.io/kubelet-serving system:node:"+node+" Approved KuboxNodeServingCert") {
		t.Errorf("no kubelet-serving CSR of node %s approved by kubox:\n%s", node, out)
	}

	// A kubelet-serving request from someone who is not one of kubox's
	// kubelets (here the admin, for a made-up node) stays pending.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "system:node:intruder", Organization: []string{"system:nodes"}},
		DNSNames:    []string{"intruder"},
		IPAddresses: []net.IP{net.ParseIP(ip)},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrYAML := fmt.Sprintf(`apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: e2e-intruder}
spec:
  signerName: kubernetes.io/kubelet-serving
  usages: [digital signature, server auth]
  request: %s
`, base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	applyYAML(ctx, t, n, "intruder-csr.yaml", csrYAML)
	time.Sleep(5 * time.Second)
	if cond, err := n.Kubectl(ctx, "get", "csr", "e2e-intruder", "-o", "jsonpath={.status.conditions}{.status.certificate}"); err != nil || strings.TrimSpace(cond) != "" {
		t.Errorf("a foreign kubelet-serving CSR was acted on: %q %v", cond, err)
	}
	if _, err := n.Kubectl(ctx, "delete", "csr", "e2e-intruder"); err != nil {
		t.Error(err)
	}
}
