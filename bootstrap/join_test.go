package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTokenRoundTrip(t *testing.T) {
	hash := strings.Repeat("0f", 32)
	tok, err := NewToken(hash)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseToken("  " + tok.String() + "\n")
	if err != nil || got != tok {
		t.Fatalf("ParseToken(%q) = %+v, %v", tok.String(), got, err)
	}
	if tok.Bearer() != tok.ID+"."+tok.Secret || len(tok.ID) != 6 || len(tok.Secret) != 16 {
		t.Fatalf("bad token shape %+v", tok)
	}
	for _, bad := range []string{
		"", "K10", tok.ID + "." + tok.Secret, "K10" + hash + "::" + tok.ID, "K10" + hash[:62] + "::" + tok.ID + "." + tok.Secret,
		"K10" + hash + "::" + "ABCDEF." + tok.Secret, "K10" + hash + "::" + tok.ID + "." + tok.Secret + "x",
		"K11" + hash + "::" + tok.ID + "." + tok.Secret,
	} {
		_, err := ParseToken(bad)
		if !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseToken(%q): %v, want ErrBadToken", bad, err)
		}
		if len(bad) > 10 && strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the (possibly secret) input: %v", err)
		}
	}
}

// servePKI serves HTTPS with the apiserver's serving chain of p and counts
// the requests that reach the handler.
func servePKI(t *testing.T, p *PKI) (string, *atomic.Int32) {
	t.Helper()
	if err := p.WriteServingChain(); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.ServingChainFile(), p.APIServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("ok"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &hits
}

func TestPinnedTLS(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = nil
	p := mustEnsure(t, cfg)
	other := testConfig(t)
	other.Now = nil
	q := mustEnsure(t, other)
	hash, err := CAHashFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	otherHash, _ := CAHashFile(q.CACert)
	if hash == otherHash {
		t.Fatal("two PKIs share a CA hash")
	}
	addr, hits := servePKI(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if ca, err := Discover(ctx, addr, hash); err != nil || CAHash(ca) != hash {
		t.Fatalf("Discover with the right hash: %v", err)
	}
	if _, err := Discover(ctx, addr, otherHash); !errors.Is(err, ErrCAMismatch) || !strings.Contains(err.Error(), hash) {
		t.Fatalf("Discover with another CA's hash: %v, want ErrCAMismatch naming the server's CA", err)
	}

	get := func(pin string) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: PinnedTLSConfig(pin, "127.0.0.1")}, Timeout: 5 * time.Second}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/secret", nil)
		req.Header.Set("Authorization", "Bearer abcdef.0123456789abcdef")
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(otherHash); !errors.Is(err, ErrCAMismatch) {
		t.Fatalf("request pinned to another CA: %v, want ErrCAMismatch", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("a request pinned to the wrong CA reached the server (%d requests): the secret would have been sent", n)
	}
	if err := get(hash); err != nil {
		t.Fatalf("request pinned to the right CA: %v", err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
}

func TestWriteShared(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	files, err := ReadShared(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := CheckShared(files); err != nil || h != mustHash(t, p.CACert) {
		t.Fatalf("CheckShared: %q, %v", h, err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	if err := WriteShared(dir, files); err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		mode := modePrivate
		if strings.HasSuffix(name, ".crt") || name == "sa.pub" {
			mode = modeCert
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
		got, _ := os.ReadFile(filepath.Join(dir, name))
		if string(got) != string(want) {
			t.Errorf("%s differs", name)
		}
	}
	// Again: same content is fine.
	if err := WriteShared(dir, files); err != nil {
		t.Fatal(err)
	}
	// Another cluster's PKI is refused, and nothing is overwritten.
	q := mustEnsure(t, testConfig(t))
	otherFiles, _ := ReadShared(q.Dir)
	if err := WriteShared(dir, otherFiles); err == nil || !strings.Contains(err.Error(), "another cluster") {
		t.Fatalf("WriteShared over another cluster's PKI: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(got) != string(files["ca.crt"]) {
		t.Fatal("ca.crt was replaced")
	}
	// Incomplete or foreign bundles are refused before anything is written.
	delete(otherFiles, "sa.key")
	if _, err := CheckShared(otherFiles); err == nil {
		t.Fatal("CheckShared accepted a bundle without sa.key")
	}
	files["../evil"] = []byte("x")
	if err := WriteShared(t.TempDir(), files); err == nil {
		t.Fatal("WriteShared accepted an unexpected file name")
	}
}

func TestEtcdClientTLS(t *testing.T) {
	p := mustEnsure(t, testConfig(t))
	files, _ := ReadShared(p.Dir)
	cfg, err := EtcdClientTLS(files, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Certificate[0]
	c, err := x509.ParseCertificate(leaf)
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: pool(t, p.EtcdServerCACert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := c.Verify(opts); err != nil {
		t.Fatalf("join etcd client cert does not verify against the etcd server CA: %v", err)
	}
}

func mustHash(t *testing.T, path string) string {
	t.Helper()
	h, err := CAHashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
