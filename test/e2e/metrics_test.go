package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// assertMetricsEndpoint scrapes kubox's own metrics endpoint at url: with
// a client certificate from the cluster's client CA (the admin's) it
// serves the want series and not the apiserver's; without a client
// certificate the TLS handshake is refused.
func assertMetricsEndpoint(t *testing.T, n *harness.Node, url string, want ...string) {
	t.Helper()
	pki := filepath.Join(n.DataDir, "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
	}
	resp, err := client(pair).Get(url)
	if err != nil {
		t.Errorf("scrape %s with the admin client cert: %v", url, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("scrape %s: %s", url, resp.Status)
	}
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			t.Errorf("metrics endpoint lacks %s", w)
		}
	}
	if strings.Contains(string(body), "apiserver_request_total") {
		t.Errorf("metrics endpoint serves the apiserver's metrics too")
	}
	if resp, err := client().Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("scrape %s without a client cert: %s, want a refused handshake", url, resp.Status)
	} else {
		t.Logf("without a client cert: %v", err)
	}
}
