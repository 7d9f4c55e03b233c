package bootstrap

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// realClockConfig issues certs at the real time, because crypto/tls checks
// validity against the real clock.
func realClockConfig(t *testing.T) Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Now = time.Now
	return cfg
}

// TestMutualTLS runs a real mTLS handshake for every server/client pairing
// the components use, with the flags they will be given.
func TestMutualTLS(t *testing.T) {
	p := mustEnsure(t, realClockConfig(t))
	tests := []struct {
		name                  string
		serverCert, serverKey string
		serverTrusts          string // CA the server checks client certs with
		clientCert, clientKey string
		clientTrusts          string // CA the client checks the server with
		serverName            string
	}{
		{"kubectl -> apiserver", p.APIServerCert, p.APIServerKey, p.ClientCACert, p.AdminCert, p.AdminKey, p.CACert, "kubernetes.default.svc"},
		{"kubelet -> apiserver by node IP", p.APIServerCert, p.APIServerKey, p.ClientCACert, p.KubeletClientCert, p.KubeletClientKey, p.CACert, "192.168.50.10"},
		{"apiserver -> etcd", p.EtcdServerCert, p.EtcdServerKey, p.EtcdServerCACert, p.EtcdClientCert, p.EtcdClientKey, p.EtcdServerCACert, "127.0.0.1"},
		{"etcd gateway -> etcd", p.EtcdServerCert, p.EtcdServerKey, p.EtcdServerCACert, p.EtcdServerCert, p.EtcdServerKey, p.EtcdServerCACert, "localhost"},
		{"etcd peer -> etcd peer", p.EtcdPeerCert, p.EtcdPeerKey, p.EtcdPeerCACert, p.EtcdPeerCert, p.EtcdPeerKey, p.EtcdPeerCACert, "192.168.50.10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := handshake(t, tt.serverCert, tt.serverKey, tt.serverTrusts, tt.clientCert, tt.clientKey, tt.clientTrusts, tt.serverName); err != nil {
				t.Error(err)
			}
		})
	}

	// And the pairings that must fail: a client cert from the wrong CA.
	if err := handshake(t, p.EtcdServerCert, p.EtcdServerKey, p.EtcdServerCACert, p.AdminCert, p.AdminKey, p.EtcdServerCACert, "127.0.0.1"); err == nil {
		t.Error("etcd accepted the admin client cert")
	}
	if err := handshake(t, p.APIServerCert, p.APIServerKey, p.ClientCACert, p.EtcdPeerCert, p.EtcdPeerKey, p.CACert, "127.0.0.1"); err == nil {
		t.Error("apiserver accepted an etcd peer cert")
	}
}

func handshake(t *testing.T, serverCert, serverKey, serverTrusts, clientCert, clientKey, clientTrusts, serverName string) error {
	t.Helper()
	sc, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	// Loopback TCP rather than net.Pipe: an unbuffered pipe stalls the
	// post-handshake messages of TLS 1.3 until a close timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{sc}, ClientCAs: pool(t, serverTrusts), ClientAuth: tls.RequireAndVerifyClientCert})
	cli := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{cc}, RootCAs: pool(t, clientTrusts), ServerName: serverName})
	done := make(chan error, 1)
	go func() {
		done <- srv.HandshakeContext(t.Context())
		srv.Close()
	}()
	cerr := cli.HandshakeContext(t.Context())
	cli.Close()
	serr := <-done
	if cerr != nil || serr != nil {
		return fmt.Errorf("handshake: client: %v; server: %v", cerr, serr)
	}
	return nil
}

// TestKubeconfigTalksToAPIServerCert uses the admin kubeconfig, unchanged
// but for the port, against a loopback server holding the apiserver cert
// and trusting the client CA, as the real apiserver will.
func TestKubeconfigTalksToAPIServerCert(t *testing.T) {
	p := mustEnsure(t, realClockConfig(t))
	sc, err := tls.LoadX509KeyPair(p.APIServerCert, p.APIServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{sc}, ClientCAs: pool(t, p.ClientCACert), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	kc, err := clientcmd.LoadFromFile(p.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.Clusters["kubox"].Server = srv.URL // same host 127.0.0.1, test port
	rc, err := clientcmd.NewDefaultClientConfig(*kc, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL + "/version")
	if err != nil {
		t.Fatalf("request with the admin kubeconfig: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "kubox-admin" {
		t.Errorf("server saw client %q, want kubox-admin", body)
	}
}
