package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

type certLine struct {
	Name     string    `json:"name"`
	CA       string    `json:"ca"`
	IsCA     bool      `json:"is_ca"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft float64   `json:"days_left"`
	Status   string    `json:"status"`
}

// certsCheck runs `kubox certs check -o json` and returns the certs by
// name and the exit code.
func certsCheck(t *testing.T, env harness.Env, n *harness.Node) (map[string]certLine, int) {
	t.Helper()
	out, errOut, code := kubox(t, env, "certs", "check", "-o", "json", "--data-dir", n.DataDir)
	var lines []certLine
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatalf("certs check -o json: %v\n%s\n%s", err, out, errOut)
	}
	m := map[string]certLine{}
	for _, l := range lines {
		m[l.Name] = l
	}
	return m, code
}

// servedCert returns the certificate a TLS server at addr presents.
func servedCert(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// waitServed waits until addr serves a cert expiring at notAfter.
func waitServed(t *testing.T, what, addr string, notAfter time.Time) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var got time.Time
	for time.Now().Before(deadline) {
		got = servedCert(t, addr).NotAfter
		if got.Equal(notAfter) {
			return
		}
		time.Sleep(time.Second)
	}
	t.Errorf("%s at %s still serves a cert expiring %s, want the renewed one (%s)", what, addr, got, notAfter)
}

// TestCertRenewal runs a server whose leaves live about 3 minutes: they are
// renewed while it runs, kubectl keeps working past the first certs'
// expiry, the apiserver serves the renewed certs, `certs check`
// shows the new expiry, and `certs rotate` renews on demand.
func TestCertRenewal(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env, "--test-leaf-cert-lifetime", "5m", "--cert-check-interval", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	n.Start()
	waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer waitCancel()
	if err := n.WaitNodeReady(waitCtx); err != nil {
		t.Fatal(err)
	}
	first, _ := certsCheck(t, env, n)
	api := first["apiserver"]
	if api.IsCA || api.CA == "" || first["ca"].IsCA != true {
		t.Fatalf("certs check: apiserver %+v, ca %+v", api, first["ca"])
	}
	if left := time.Until(api.NotAfter); left > 6*time.Minute || left < time.Minute {
		t.Fatalf("apiserver cert expires in %s, want about 5m (test lifetime)", left)
	}
	firstExpiry := api.NotAfter
	t.Logf("first apiserver cert expires %s", firstExpiry)

	// Until the first certs have expired and a while after: kubectl works
	// on every try and the leaves get renewed.
	var renewedAt time.Time
	deadline := firstExpiry.Add(45 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := n.Kubectl(ctx, "get", "--raw", "/readyz"); err != nil {
			t.Fatalf("kubectl failed at %s (first certs expire %s): %v", time.Now().Format(time.TimeOnly), firstExpiry.Format(time.TimeOnly), err)
		}
		if renewedAt.IsZero() {
			if now, code := certsCheck(t, env, n); now["apiserver"].NotAfter.After(firstExpiry) {
				renewedAt = time.Now()
				t.Logf("renewed at %s, %s before the old expiry; new apiserver expiry %s; certs check exit %d",
					renewedAt.Format(time.TimeOnly), firstExpiry.Sub(renewedAt).Round(time.Second), now["apiserver"].NotAfter.Format(time.TimeOnly), code)
				if now["admin"].NotAfter.Equal(first["admin"].NotAfter) || !now["ca"].NotAfter.Equal(first["ca"].NotAfter) {
					t.Errorf("admin renewed %v, CA unchanged %v", !now["admin"].NotAfter.Equal(first["admin"].NotAfter), now["ca"].NotAfter.Equal(first["ca"].NotAfter))
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	if renewedAt.IsZero() {
		t.Fatal("the leaves were not renewed while kubox ran")
	}
	// Served certs are the renewed ones (renewal continues every ~2 minutes,
	// so compare with what is on disk now).
	now, _ := certsCheck(t, env, n)
	waitServed(t, "apiserver", "127.0.0.1:6443", now["apiserver"].NotAfter)
	// The kubelet's serving cert comes from a CSR and the kubelet renews it
	// itself (see assertKubeletServingCSR).
	metricsOut, err := n.Kubectl(ctx, "get", "--raw", "/metrics")
	if err != nil || !strings.Contains(metricsOut, `kubox_certificate_expiry_seconds{cert="apiserver"}`) {
		t.Errorf("metric kubox_certificate_expiry_seconds missing (%v)", err)
	}

	// certs rotate on the running server: new cert and key now.
	before, _ := certsCheck(t, env, n)
	rot, errOut, code := kubox(t, env, "certs", "rotate", "--service", "apiserver", "--data-dir", n.DataDir)
	if code != 0 {
		t.Fatalf("certs rotate: exit %d: %s %s", code, rot, errOut)
	}
	t.Logf("certs rotate: %s", strings.TrimSpace(rot))
	after, _ := certsCheck(t, env, n)
	if !after["apiserver"].NotAfter.After(before["apiserver"].NotAfter) {
		t.Errorf("certs rotate: apiserver expiry %s, was %s", after["apiserver"].NotAfter, before["apiserver"].NotAfter)
	}
	waitServed(t, "apiserver after rotate", "127.0.0.1:6443", after["apiserver"].NotAfter)
	if _, errOut, code := kubox(t, env, "certs", "rotate", "--service", "ca", "--data-dir", n.DataDir); code == 0 || !strings.Contains(errOut, "CA") {
		t.Errorf("certs rotate --service ca: exit %d, %s", code, errOut)
	}
	if _, err := n.Kubectl(ctx, "get", "nodes"); err != nil {
		t.Fatal(err)
	}
	// The in-process kubelet, controller-manager and scheduler read their
	// client certs from the files their kubeconfigs name; client-go
	// re-reads them every 5 minutes, so with minutes-long test certs the
	// node may be NotReady for a while around the first expiry (with
	// one-year certs, renewal comes four months early). Logged, not asserted.
	out, err := n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status}`)
	t.Logf("node Ready after the first client certs expired: %q %v", out, err)
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func servedNodeIP(t *testing.T, ctx context.Context, n *harness.Node) string {
	t.Helper()
	out, err := n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil || net.ParseIP(strings.TrimSpace(out)) == nil {
		t.Fatalf("node IP: %q %v", out, err)
	}
	return strings.TrimSpace(out)
}
