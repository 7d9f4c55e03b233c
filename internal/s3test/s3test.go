// Package s3test runs a real S3 server (MinIO, built by `make
// test-s3-server`) for tests: on an address the test owns, with a fresh
// data dir, credentials and one bucket, stopped when the test ends.
package s3test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnvBinary names the MinIO binary; make sets it.
const EnvBinary = "KUBOX_TEST_S3_SERVER"

// Server is one MinIO process.
type Server struct {
	tb        testing.TB
	bin, dir  string
	Addr      string // host:port
	Endpoint  string // http://host:port
	Bucket    string
	AccessKey string
	SecretKey string
	// CAFile is the PEM CA of the server's certificate, for a TLS server.
	CAFile  string
	logPath string
	tls     *tls.Config // client side, for a TLS server
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Binary returns the MinIO binary, or skips the test without one (fails
// it on CI, where `make test` builds it).
func Binary(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set: run the tests with make (make test-s3-server builds MinIO)", EnvBinary)
		}
		tb.Skipf("%s is not set: run `make test-s3-server` and the tests through make", EnvBinary)
	}
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("S3 test server: %v (make test-s3-server builds it)", err)
	}
	return bin
}

// Start runs MinIO on host (an address of this machine the test owns; a
// free port is picked) with a bucket "kubox", over plain HTTP.
func Start(tb testing.TB, host string) *Server { return start(tb, host, false) }

// StartTLS is Start over HTTPS, with a certificate for host from a CA of
// its own (CAFile).
func StartTLS(tb testing.TB, host string) *Server { return start(tb, host, true) }

func start(tb testing.TB, host string, withTLS bool) *Server {
	tb.Helper()
	bin := Binary(tb)
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), Addr: addr, Endpoint: "http://" + addr, Bucket: "kubox",
		AccessKey: "kubox-" + randHex(4), SecretKey: randHex(16)}
	s.logPath = filepath.Join(s.dir, "minio.log")
	if withTLS {
		s.makeCerts(host)
		s.Endpoint = "https://" + addr
	}
	tb.Cleanup(s.Kill)
	s.Restart()
	cl := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("S3 test server: make bucket: %v", err)
	}
	return s
}

// Client is a client of the server, for checks behind kubox's back.
func (s *Server) Client() *minio.Client {
	opts := &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")}
	if s.tls != nil {
		opts.Secure, opts.Transport = true, &http.Transport{TLSClientConfig: s.tls}
	}
	cl, err := minio.New(s.Addr, opts)
	if err != nil {
		s.tb.Fatal(err)
	}
	return cl
}

// CredentialsFile writes the access key to a 0600 file in dir.
func (s *Server) CredentialsFile(dir string) string {
	p := filepath.Join(dir, "s3.credentials")
	data := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s.AccessKey, s.SecretKey)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		s.tb.Fatal(err)
	}
	return p
}

// Restart starts the server (again, on the same address and data) and
// waits until it answers.
func (s *Server) Restart() {
	s.tb.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	args := []string{"server", "--quiet", "--address", s.Addr, "--console-address", "127.0.0.1:0"}
	if s.tls != nil {
		args = append(args, "--certs-dir", filepath.Join(s.dir, "certs"))
	}
	cmd := exec.Command(s.bin, append(args, filepath.Join(s.dir, "data"))...)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "HOME="+s.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.tb.Fatalf("start MinIO: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: s.tls}, Timeout: 5 * time.Second}
	for {
		resp, err := hc.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(s.logPath)
			s.tb.Fatalf("MinIO exited at start:\n%s", log)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("MinIO not ready at %s in 60 s", s.Endpoint)
		}
	}
}

// Kill stops the server at once (SIGKILL), as a crash or a network cut
// would.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// makeCerts writes a CA and a serving certificate for host into
// <dir>/certs (MinIO's public.crt and private.key) and the CA to CAFile.
func (s *Server) makeCerts(host string) {
	tb := s.tb
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP(host)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	certs := filepath.Join(s.dir, "certs")
	s.CAFile = filepath.Join(s.dir, "ca.crt")
	for p, b := range map[string]*pem.Block{
		filepath.Join(certs, "public.crt"):  {Type: "CERTIFICATE", Bytes: der},
		filepath.Join(certs, "private.key"): {Type: "PRIVATE KEY", Bytes: keyDER},
		s.CAFile:                            {Type: "CERTIFICATE", Bytes: caDER},
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, pem.EncodeToMemory(b), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s.tls = &tls.Config{RootCAs: pool}
}
