package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	kpem []byte
}

func issue(t *testing.T, cn string, parent *issued, isCA bool, usage x509.ExtKeyUsage) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return &issued{cert: c, key: key,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		kpem: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})}
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEndpoint: a client with a certificate from the client CA gets kubox's
// metrics and nothing else; one without a certificate, or with one from
// another CA, is refused in the TLS handshake.
func TestEndpoint(t *testing.T) {
	dir := t.TempDir()
	serverCA := issue(t, "cluster-ca", nil, true, 0)
	clientCA := issue(t, "client-ca", nil, true, 0)
	otherCA := issue(t, "other-ca", nil, true, 0)
	srv := issue(t, "kube-apiserver", serverCA, false, x509.ExtKeyUsageServerAuth)
	good := issue(t, "prometheus", clientCA, false, x509.ExtKeyUsageClientAuth)
	stranger := issue(t, "prometheus", otherCA, false, x509.ExtKeyUsageClientAuth)

	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubox_certificate_expiry_seconds", Help: "x"})
	g.Set(42)
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "apiserver_request_total", Help: "x"})
	reg.MustRegister(g, other)

	s := New(Config{
		Address:  "127.0.0.1:0",
		CertFile: write(t, dir, "srv.crt", srv.pem), KeyFile: write(t, dir, "srv.key", srv.kpem),
		ClientCAFile: write(t, dir, "client-ca.crt", clientCA.pem),
		Gatherer:     reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	base := "https://" + s.Addr().String()
	url := base + "/metrics"
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	get := func(client *issued) (string, error) {
		cfg := &tls.Config{RootCAs: roots}
		if client != nil {
			pair, err := tls.X509KeyPair(client.pem, client.kpem)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := get(good)
	if err != nil {
		t.Fatalf("scrape with a client CA cert: %v", err)
	}
	if !strings.Contains(body, "kubox_certificate_expiry_seconds 42") || strings.Contains(body, "apiserver_request_total") {
		t.Errorf("scraped:\n%s\nwant kubox_* only", body)
	}
	if _, err := get(nil); err == nil {
		t.Error("scrape without a client cert succeeded")
	}
	// Go's profiles only with Config.Pprof (the benchmarks' --test-pprof).
	url = base + "/debug/pprof/heap?debug=1"
	if body, err := get(good); err != nil || strings.Contains(body, "heap profile") {
		t.Errorf("heap profile served without Pprof (err %v)", err)
	}
	url = base + "/metrics"
	if _, err := get(stranger); err == nil {
		t.Error("scrape with a cert from another CA succeeded")
	}

	// A rotated client CA file applies to new connections.
	write(t, dir, "client-ca.crt", append(append([]byte{}, clientCA.pem...), otherCA.pem...))
	future := time.Now().Add(time.Second)
	os.Chtimes(filepath.Join(dir, "client-ca.crt"), future, future)
	if _, err := get(stranger); err != nil {
		t.Errorf("after adding the other CA to the client CA file: %v", err)
	}
}

func TestEndpointPprof(t *testing.T) {
	dir := t.TempDir()
	serverCA := issue(t, "cluster-ca", nil, true, 0)
	clientCA := issue(t, "client-ca", nil, true, 0)
	srv := issue(t, "kube-apiserver", serverCA, false, x509.ExtKeyUsageServerAuth)
	good := issue(t, "bench", clientCA, false, x509.ExtKeyUsageClientAuth)
	s := New(Config{
		Address:  "127.0.0.1:0",
		CertFile: write(t, dir, "srv.crt", srv.pem), KeyFile: write(t, dir, "srv.key", srv.kpem),
		ClientCAFile: write(t, dir, "client-ca.crt", clientCA.pem),
		Gatherer:     prometheus.NewRegistry(),
		Pprof:        true,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	pair, err := tls.X509KeyPair(good.pem, good.kpem)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	resp, err := c.Get("https://" + s.Addr().String() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "heap profile:") {
		t.Errorf("heap profile: %s, %.80q", resp.Status, b)
	}
}
