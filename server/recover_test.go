package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func TestRecoverRefusesWithoutEtcdData(t *testing.T) {
	_, err := Recover(context.Background(), Config{DataDir: t.TempDir(), NodeName: "box2"}, RecoverOptions{})
	var re *RecoverError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no etcd data") {
		t.Fatalf("got %v, want a RecoverError saying there is no etcd data", err)
	}
}

// A member alone in its cluster has nothing to recover; its data is read
// from a copy and left as it was.
func TestRecoverOneMemberClusterIsLeftAlone(t *testing.T) {
	dataDir := t.TempDir()
	startStopEtcd(t, filepath.Join(dataDir, "etcd"), "box1")
	_, err := Recover(context.Background(), Config{DataDir: dataDir, NodeName: "box1", NodeIP: net.ParseIP("127.0.0.1"), EtcdPeerPort: 2380}, RecoverOptions{})
	var re *RecoverError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "already is a one-member cluster") {
		t.Fatalf("got %v, want a RecoverError: nothing to recover", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(dataDir, "etcd.old-*")); len(aside) != 0 {
		t.Errorf("the etcd data was moved: %v", aside)
	}
	if left, _ := filepath.Glob(filepath.Join(dataDir, ".etcd.recover-*")); len(left) != 0 {
		t.Errorf("staging left behind: %v", left)
	}
	// Another name: this box is not in its own data.
	_, err = Recover(context.Background(), Config{DataDir: dataDir, NodeName: "box9"}, RecoverOptions{})
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no member named box9") || !strings.Contains(err.Error(), "box1") {
		t.Fatalf("got %v, want a RecoverError naming the members", err)
	}
}

func TestTLSAnswers(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !tlsAnswers(ctx, srv.URL, &tls.Config{RootCAs: pool}) {
		t.Errorf("a TLS server with a trusted certificate does not count as answering")
	}
	if tlsAnswers(ctx, srv.URL, &tls.Config{RootCAs: x509.NewCertPool()}) {
		t.Errorf("a server whose certificate this box's CA did not sign counts as answering")
	}
	u, _ := url.Parse(srv.URL)
	srv.Close()
	if tlsAnswers(ctx, "https://"+u.Host, &tls.Config{RootCAs: pool}) {
		t.Errorf("a closed port counts as answering")
	}
}

// startStopEtcd creates a one-member etcd data dir in dir.
func startStopEtcd(t *testing.T, dir, name string) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = name, dir, "error"
	client, peer := freeURL(t), freeURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}
	e.Close()
}

func freeURL(t *testing.T) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}
