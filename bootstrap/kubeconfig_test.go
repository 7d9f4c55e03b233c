package bootstrap

import (
	"crypto/x509"
	"os"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func TestKubeconfigs(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	caPEM, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path     string
		cn       string
		org      []string
		embedded bool // self-contained, or referencing the cert files
	}{
		{p.AdminKubeconfig, "kubox-admin", []string{"system:masters"}, true},
		{cfg.AdminKubeconfigPath, "kubox-admin", []string{"system:masters"}, true},
		{p.ControllerManagerKubeconfig, "system:kube-controller-manager", nil, false},
		{p.SchedulerKubeconfig, "system:kube-scheduler", nil, false},
		{p.KubeletKubeconfig, "system:node:edge-1", []string{"system:nodes"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.cn, func(t *testing.T) {
			kc, err := clientcmd.LoadFromFile(tt.path)
			if err != nil {
				t.Fatalf("load %s: %v", tt.path, err)
			}
			if kc.CurrentContext != "kubox" {
				t.Errorf("current context %q, want kubox", kc.CurrentContext)
			}
			cluster, user := kc.Clusters["kubox"], kc.AuthInfos["kubox"]
			if cluster == nil || user == nil || kc.Contexts["kubox"] == nil {
				t.Fatalf("kubeconfig lacks the kubox cluster, user or context: %+v", kc)
			}
			if cluster.Server != "https://127.0.0.1:6443" {
				t.Errorf("server %q", cluster.Server)
			}
			if string(cluster.CertificateAuthorityData) != string(caPEM) {
				t.Error("CA data is not the cluster CA")
			}
			certPEM, keyPEM := user.ClientCertificateData, user.ClientKeyData
			if !tt.embedded {
				// Components must see renewed certs: the kubeconfig points at
				// the files, so client-go reloads them.
				if len(certPEM) != 0 || len(keyPEM) != 0 || user.ClientCertificate == "" || user.ClientKey == "" {
					t.Fatalf("component kubeconfig must reference cert files, not embed them: %+v", user)
				}
				if certPEM, err = os.ReadFile(user.ClientCertificate); err != nil {
					t.Fatal(err)
				}
				if keyPEM, err = os.ReadFile(user.ClientKey); err != nil {
					t.Fatal(err)
				}
			}
			cert, err := parseCert(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != tt.cn || !slices.Equal(cert.Subject.Organization, tt.org) {
				t.Errorf("client cert CN=%q O=%q, want CN=%q O=%q", cert.Subject.CommonName, cert.Subject.Organization, tt.cn, tt.org)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool(t, p.ClientCACert), CurrentTime: testNow,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("client cert does not verify against the client CA: %v", err)
			}
			key, err := parseKey(keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublicKey(cert.PublicKey, key.Public()) {
				t.Error("client key does not match client cert")
			}
			// It must be usable as a client config as is.
			rc, err := clientcmd.NewDefaultClientConfig(*kc, nil).ClientConfig()
			if err != nil {
				t.Fatalf("client config: %v", err)
			}
			if rc.Host != "https://127.0.0.1:6443" || len(rc.TLSClientConfig.CAData) == 0 ||
				(len(rc.TLSClientConfig.CertData) == 0 && rc.TLSClientConfig.CertFile == "") {
				t.Errorf("rest config incomplete: host %q", rc.Host)
			}
		})
	}
}

func TestKubeconfigsFollowServerURL(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	before := snapshot(t, cfg.KubeconfigDir)

	cfg.APIServerURL = "https://10.0.0.99:6443"
	cfg.Now = func() time.Time { return testNow.Add(time.Minute) }
	mustEnsure(t, cfg)
	after := snapshot(t, cfg.KubeconfigDir)
	for _, path := range []string{p.AdminKubeconfig, p.ControllerManagerKubeconfig, p.SchedulerKubeconfig, p.KubeletKubeconfig, cfg.AdminKubeconfigPath} {
		kc, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := kc.Clusters["kubox"].Server; got != "https://10.0.0.99:6443" {
			t.Errorf("%s: server %q after URL change", path, got)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o", path, fi.Mode().Perm())
		}
	}
	if len(changedFiles(before, after)) != 4 {
		t.Errorf("changed %v, want the 4 kubeconfigs", changedFiles(before, after))
	}
	// The new URL host must be in the apiserver cert, or these kubeconfigs fail.
	if err := readCert(t, p.APIServerCert).VerifyHostname("10.0.0.99"); err != nil {
		t.Error(err)
	}
}
