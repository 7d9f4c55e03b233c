package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// certsIn parses every certificate in a PEM file.
func certsIn(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// verifies reports whether the chain in the leaf file (leaf, then
// intermediates) verifies against a pool holding only root.
func verifies(t *testing.T, leafPath string, root *x509.Certificate, usage x509.ExtKeyUsage) bool {
	t.Helper()
	chain := certsIn(t, leafPath)
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: testNow.Add(time.Hour)})
	return err == nil
}

func TestRotateCA(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	oldCA := readCert(t, p.CACert)
	oldClientCA := readCert(t, p.ClientCACert)
	oldPeerCA := readCert(t, p.EtcdPeerCACert)

	if _, err := p.FinishCARotation(ctx, testNow); !errors.Is(err, ErrNoRotation) {
		t.Fatalf("finish without a rotation: %v, want ErrNoRotation", err)
	}
	rotateAt := testNow.Add(time.Minute)
	lines, err := p.RotateCA(ctx, rotateAt)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 5 {
		t.Errorf("rotated %d CAs, want 5: %v", len(lines), lines)
	}
	if _, err := p.RotateCA(ctx, rotateAt); !errors.Is(err, ErrRotationInProgress) {
		t.Fatalf("second rotate-ca: %v, want ErrRotationInProgress", err)
	}
	for _, f := range p.LeafCertFiles() {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("leaf %s not retired", f)
		}
	}
	cfg.Now = func() time.Time { return rotateAt }
	p = mustEnsure(t, cfg)

	bundle := certsIn(t, p.CACert)
	if len(bundle) != 2 || !bundle[1].Equal(oldCA) || bundle[0].Equal(oldCA) {
		t.Fatalf("ca.crt after rotate-ca: %d certs, want the new CA then the old one", len(bundle))
	}
	newCA, newClientCA, newPeerCA := bundle[0], readCert(t, p.ClientCACert), readCert(t, p.EtcdPeerCACert)
	// Leaves come from the new CAs and verify against the old ones too
	// (through the cross-signed certificate they carry) and the new ones.
	for _, c := range []struct {
		leaf     string
		old, new *x509.Certificate
		usage    x509.ExtKeyUsage
	}{
		{p.APIServerCert, oldCA, newCA, x509.ExtKeyUsageServerAuth},
		{p.AdminCert, oldClientCA, newClientCA, x509.ExtKeyUsageClientAuth},
		{p.EtcdPeerCert, oldPeerCA, newPeerCA, x509.ExtKeyUsageServerAuth},
	} {
		if leaf := readCert(t, c.leaf); leaf.CheckSignatureFrom(c.new) != nil {
			t.Errorf("%s is not signed by the new CA", c.leaf)
		}
		if !verifies(t, c.leaf, c.old, c.usage) || !verifies(t, c.leaf, c.new, c.usage) {
			t.Errorf("%s: verifies against old CA %v, new CA %v; want both", c.leaf, verifies(t, c.leaf, c.old, c.usage), verifies(t, c.leaf, c.new, c.usage))
		}
	}
	// The CSR signer gets the new CA alone.
	signer, err := p.SignerCertFile()
	if err != nil {
		t.Fatal(err)
	}
	if s := certsIn(t, signer); len(s) != 1 || !s[0].Equal(newCA) {
		t.Errorf("signer file holds %d certs, want only the new CA", len(s))
	}
	// The admin kubeconfig trusts both CAs and has a new client cert.
	kc, err := clientcmd.LoadFromFile(cfg.AdminKubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	ca := string(kc.Clusters[kubeconfigName].CertificateAuthorityData)
	if strings.Count(ca, "BEGIN CERTIFICATE") != 2 {
		t.Errorf("admin kubeconfig CA data holds %d certificates, want 2", strings.Count(ca, "BEGIN CERTIFICATE"))
	}
	pair, err := tls.X509KeyPair(kc.AuthInfos[kubeconfigName].ClientCertificateData, kc.AuthInfos[kubeconfigName].ClientKeyData)
	if err != nil {
		t.Fatal(err)
	}
	if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); leaf.CheckSignatureFrom(newClientCA) != nil {
		t.Error("admin kubeconfig's client cert is not from the new client CA")
	}
	// The old CA files are kept.
	if old := oldFiles(t, p.Dir); len(old) < 10 {
		t.Errorf("old CA files kept: %v", old)
	}

	finishAt := rotateAt.Add(time.Minute)
	if _, err := p.FinishCARotation(ctx, finishAt); err != nil {
		t.Fatal(err)
	}
	cfg.Now = func() time.Time { return finishAt }
	p = mustEnsure(t, cfg)
	if b := certsIn(t, p.CACert); len(b) != 1 || !b[0].Equal(newCA) {
		t.Fatalf("ca.crt after --finish: %d certs, want only the new CA", len(b))
	}
	if verifies(t, p.APIServerCert, oldCA, x509.ExtKeyUsageServerAuth) || !verifies(t, p.APIServerCert, newCA, x509.ExtKeyUsageServerAuth) {
		t.Error("after --finish the apiserver cert must verify against the new CA only")
	}
	if n := len(certsIn(t, p.APIServerCert)); n != 1 {
		t.Errorf("apiserver.crt holds %d certificates after --finish, want the leaf only", n)
	}
	if busy, _ := p.RotationInProgress(); busy {
		t.Error("rotation still in progress after --finish")
	}
	// A later rotation works again.
	if _, err := p.RotateCA(ctx, finishAt.Add(time.Minute)); err != nil {
		t.Errorf("second rotation: %v", err)
	}
}
