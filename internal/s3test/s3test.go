// Package s3test runs a real S3 server (MinIO, built by `make
// test-s3-server`) for tests: on an address the test owns, with a fresh
// data dir, credentials and one bucket, stopped when the test ends.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
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
// free port is picked) with a bucket "kubox".
func Start(tb testing.TB, host string) *Server {
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
	tb.Cleanup(s.Kill)
	s.Restart()
	cl, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("S3 test server: make bucket: %v", err)
	}
	return s
}

// Client is a client of the server, for checks behind kubox's back.
func (s *Server) Client() *minio.Client {
	cl, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
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
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.Addr, "--console-address", "127.0.0.1:0", filepath.Join(s.dir, "data"))
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
	for {
		resp, err := http.Get(s.Endpoint + "/minio/health/ready")
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
