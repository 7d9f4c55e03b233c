package bootstrap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestEnsureCreatesEverythingWithModes(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)

	if p.Dir != cfg.Dir {
		t.Errorf("Dir = %q, want %q", p.Dir, cfg.Dir)
	}
	for field, path := range pathFields(p) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", field, err)
			continue
		}
		var want fs.FileMode = 0o644
		switch {
		case strings.HasSuffix(path, ".key"), strings.HasSuffix(path, ".kubeconfig"), field == "EncryptionConfig":
			want = 0o600
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s %s: mode %o, want %o", field, path, got, want)
		}
		if !strings.HasPrefix(path, cfg.Dir+string(filepath.Separator)) && !strings.HasPrefix(path, cfg.KubeconfigDir+string(filepath.Separator)) {
			t.Errorf("%s %s is outside Dir and KubeconfigDir", field, path)
		}
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "etcd"), cfg.KubeconfigDir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("dir %s: mode %o, want 700", d, got)
		}
	}
	fi, err := os.Stat(cfg.AdminKubeconfigPath)
	if err != nil {
		t.Fatalf("admin kubeconfig copy: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("admin kubeconfig copy: mode %o, want 600", got)
	}
	fi, err = os.Stat(filepath.Dir(cfg.AdminKubeconfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o755 {
		t.Errorf("admin kubeconfig parent: mode %o, want 755", got)
	}
	copyData, _ := os.ReadFile(cfg.AdminKubeconfigPath)
	adminData, _ := os.ReadFile(p.AdminKubeconfig)
	if string(copyData) != string(adminData) {
		t.Error("admin kubeconfig copy differs from the admin kubeconfig")
	}
	// Etcd files live under Dir/etcd.
	if filepath.Dir(p.EtcdServerCert) != filepath.Join(cfg.Dir, "etcd") {
		t.Errorf("EtcdServerCert %s not under %s/etcd", p.EtcdServerCert, cfg.Dir)
	}
	// No temp files left behind.
	for path := range snapshot(t, cfg.Dir, cfg.KubeconfigDir) {
		if strings.Contains(filepath.Base(path), ".tmp-") {
			t.Errorf("temp file left behind: %s", path)
		}
	}
}

func TestCAsAndLeaves(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)

	cas := map[string]string{
		"cluster": p.CACert, "client": p.ClientCACert, "request-header": p.RequestHeaderCACert,
		"etcd-server": p.EtcdServerCACert, "etcd-peer": p.EtcdPeerCACert,
	}
	for name, path := range cas {
		c := readCert(t, path)
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.KeyUsage&x509.KeyUsageCRLSign == 0 {
			t.Errorf("CA %s: IsCA=%v KeyUsage=%b, want CA with certSign and CRLSign", name, c.IsCA, c.KeyUsage)
		}
		if got := c.NotAfter.Sub(testNow); got != caValidity {
			t.Errorf("CA %s: valid for %v after now, want %v", name, got, caValidity)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("CA %s is not self-signed: %v", name, err)
		}
	}

	server := x509.ExtKeyUsageServerAuth
	client := x509.ExtKeyUsageClientAuth
	tests := []struct {
		name, cert, key, ca string
		usages              []x509.ExtKeyUsage
		cn                  string
		org                 []string
	}{
		{"apiserver", p.APIServerCert, p.APIServerKey, p.CACert, []x509.ExtKeyUsage{server}, "kube-apiserver", nil},
		{"etcd server", p.EtcdServerCert, p.EtcdServerKey, p.EtcdServerCACert, []x509.ExtKeyUsage{server, client}, "edge-1", nil},
		{"etcd peer", p.EtcdPeerCert, p.EtcdPeerKey, p.EtcdPeerCACert, []x509.ExtKeyUsage{server, client}, "edge-1", nil},
		{"etcd client", p.EtcdClientCert, p.EtcdClientKey, p.EtcdServerCACert, []x509.ExtKeyUsage{client}, "kube-apiserver-etcd-client", nil},
		{"front-proxy client", p.FrontProxyClientCert, p.FrontProxyClientKey, p.RequestHeaderCACert, []x509.ExtKeyUsage{client}, "front-proxy-client", nil},
		{"apiserver kubelet client", p.APIServerKubeletClientCert, p.APIServerKubeletClientKey, p.ClientCACert, []x509.ExtKeyUsage{client}, "kube-apiserver-kubelet-client", []string{"system:masters"}},
		{"kubelet client", p.KubeletClientCert, p.KubeletClientKey, p.ClientCACert, []x509.ExtKeyUsage{client}, "system:node:edge-1", []string{"system:nodes"}},
		{"controller-manager", p.ControllerManagerCert, p.ControllerManagerKey, p.ClientCACert, []x509.ExtKeyUsage{client}, "system:kube-controller-manager", nil},
		{"scheduler", p.SchedulerCert, p.SchedulerKey, p.ClientCACert, []x509.ExtKeyUsage{client}, "system:kube-scheduler", nil},
		{"admin", p.AdminCert, p.AdminKey, p.ClientCACert, []x509.ExtKeyUsage{client}, "kubox-admin", []string{"system:masters"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readCert(t, tt.cert)
			for _, u := range tt.usages {
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, tt.ca), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
					t.Errorf("verify against %s for %s: %v", filepath.Base(tt.ca), usageName(u), err)
				}
			}
			if !slices.Equal(c.ExtKeyUsage, tt.usages) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tt.usages)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %b, want digitalSignature only", c.KeyUsage)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			// Separate CAs must really be separate: a client cert must not
			// verify against the cluster CA, nor a serving cert against the
			// client CA.
			other := p.ClientCACert
			if tt.ca == p.ClientCACert {
				other = p.CACert
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, other), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				t.Errorf("also verifies against %s", filepath.Base(other))
			}
			if c.Subject.CommonName != tt.cn || !slices.Equal(c.Subject.Organization, tt.org) {
				t.Errorf("subject CN=%q O=%q, want CN=%q O=%q", c.Subject.CommonName, c.Subject.Organization, tt.cn, tt.org)
			}
			if got, want := c.NotBefore, testNow.Add(-5*time.Minute); !got.Equal(want) {
				t.Errorf("NotBefore = %v, want %v", got, want)
			}
			if got, want := c.NotAfter, testNow.Add(365*24*time.Hour); !got.Equal(want) {
				t.Errorf("NotAfter = %v, want %v", got, want)
			}
			if c.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %v looks too short for a random 128-bit serial", c.SerialNumber)
			}
			key, _, err := loadKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			ec, ok := key.(*ecdsa.PrivateKey)
			if !ok || ec.Curve != elliptic.P256() {
				t.Fatalf("key is %T, want ECDSA P-256", key)
			}
			if !ec.PublicKey.Equal(c.PublicKey) {
				t.Error("key does not match certificate")
			}
		})
	}
}

func TestServingSANs(t *testing.T) {
	cfg := testConfig(t)
	cfg.NodeIPs = append(cfg.NodeIPs, net.ParseIP("fd00::10"))
	cfg.ClusterDomain = "edge.internal"
	p := mustEnsure(t, cfg)

	api := readCert(t, p.APIServerCert)
	for _, host := range []string{"edge-1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.edge.internal", "127.0.0.1", "10.43.0.1", "192.168.50.10", "fd00::10"} {
		if err := api.VerifyHostname(host); err != nil {
			t.Errorf("apiserver cert: %v", err)
		}
	}
	if err := api.VerifyHostname("kubernetes.default.svc.cluster.local"); err == nil {
		t.Error("apiserver cert covers the default domain although ClusterDomain is edge.internal")
	}
	if !slices.ContainsFunc(api.IPAddresses, net.ParseIP("10.43.0.1").Equal) {
		t.Errorf("apiserver IPs %v lack first service IP 10.43.0.1", api.IPAddresses)
	}

	cases := map[string]struct {
		path string
		want []string
	}{
		"etcd server": {p.EtcdServerCert, []string{"localhost", "127.0.0.1", "::1", "edge-1", "192.168.50.10", "fd00::10"}},
		"etcd peer":   {p.EtcdPeerCert, []string{"edge-1", "192.168.50.10", "fd00::10", "localhost", "127.0.0.1"}},
	}
	for name, c := range cases {
		cert := readCert(t, c.path)
		for _, h := range c.want {
			if err := cert.VerifyHostname(h); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := cert.VerifyHostname("10.43.0.1"); err == nil {
			t.Errorf("%s covers the service IP, which it should not", name)
		}
	}
}

func TestAPIServerURLHostIsCovered(t *testing.T) {
	cfg := testConfig(t)
	cfg.APIServerURL = "https://kubox.example.internal:6443"
	p := mustEnsure(t, cfg)
	if err := readCert(t, p.APIServerCert).VerifyHostname("kubox.example.internal"); err != nil {
		t.Error(err)
	}
}

func TestSecondEnsureChangesNothing(t *testing.T) {
	cfg := testConfig(t)
	mustEnsure(t, cfg)
	before := snapshot(t, cfg.Dir, cfg.KubeconfigDir, cfg.AdminKubeconfigPath)
	if len(before) < 38 {
		t.Fatalf("only %d files after Ensure", len(before))
	}

	// A day later, with nothing due for renewal, still nothing changes.
	cfg.Now = func() time.Time { return testNow.Add(24 * time.Hour) }
	mustEnsure(t, cfg)
	after := snapshot(t, cfg.Dir, cfg.KubeconfigDir, cfg.AdminKubeconfigPath)
	if ch := changedFiles(before, after); len(ch) != 0 {
		t.Errorf("second Ensure changed %v", ch)
	}
}

func TestDeletedLeafIsRegeneratedAlone(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	caBefore, _ := os.ReadFile(p.ClientCACert)

	if err := os.Remove(p.SchedulerCert); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p.SchedulerKey); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, cfg.Dir, cfg.KubeconfigDir, cfg.AdminKubeconfigPath)
	mustEnsure(t, cfg)
	after := snapshot(t, cfg.Dir, cfg.KubeconfigDir, cfg.AdminKubeconfigPath)

	got := changedFiles(before, after)
	slices.Sort(got)
	// The scheduler's kubeconfig references the cert files, so it stays as is.
	want := []string{p.SchedulerCert, p.SchedulerKey}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("changed files = %v, want %v", got, want)
	}
	caAfter, _ := os.ReadFile(p.ClientCACert)
	if string(caBefore) != string(caAfter) {
		t.Fatal("client CA changed")
	}
	c := readCert(t, p.SchedulerCert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, p.ClientCACert), CurrentTime: testNow,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("regenerated scheduler cert: %v", err)
	}
}

func TestLeafWithoutCertReusesKey(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	keyBefore, _ := os.ReadFile(p.AdminKey)
	oldSerial := readCert(t, p.AdminCert).SerialNumber
	if err := os.Remove(p.AdminCert); err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, cfg)
	keyAfter, _ := os.ReadFile(p.AdminKey)
	if string(keyBefore) != string(keyAfter) {
		t.Error("existing admin key was replaced")
	}
	c := readCert(t, p.AdminCert)
	if c.SerialNumber.Cmp(oldSerial) == 0 {
		t.Error("admin cert has the old serial")
	}
	key, _, _ := loadKey(p.AdminKey)
	if !samePublicKey(c.PublicKey, key.Public()) {
		t.Error("new admin cert is not for the existing key")
	}
	if len(oldFiles(t, cfg.Dir)) != 0 {
		t.Errorf("unexpected .old- files: %v", oldFiles(t, cfg.Dir))
	}
}

func TestNodeIPChangeReissuesServingCerts(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	before := snapshot(t, cfg.Dir)

	cfg.NodeIPs = []net.IP{net.ParseIP("10.20.30.40")}
	later := testNow.Add(time.Hour)
	cfg.Now = func() time.Time { return later }
	mustEnsure(t, cfg)
	after := snapshot(t, cfg.Dir)

	serving := map[string]string{
		p.APIServerCert: p.APIServerKey, p.EtcdServerCert: p.EtcdServerKey,
		p.EtcdPeerCert: p.EtcdPeerKey,
	}
	suffix := ".old-" + strconv.FormatInt(later.Unix(), 10)
	for crt, key := range serving {
		for _, f := range []string{crt, key} {
			if before[f].data == after[f].data {
				t.Errorf("%s not re-issued", f)
			}
			old, ok := after[f+suffix]
			if !ok {
				t.Errorf("%s%s missing", f, suffix)
				continue
			}
			if old.data != before[f].data {
				t.Errorf("%s%s does not hold the previous content", f, suffix)
			}
		}
		if err := readCert(t, crt).VerifyHostname("10.20.30.40"); err != nil {
			t.Errorf("re-issued %s: %v", filepath.Base(crt), err)
		}
	}
	// Client certs and CAs carry no node IP: untouched.
	for _, f := range []string{p.CACert, p.CAKey, p.ClientCACert, p.EtcdServerCACert, p.AdminCert, p.AdminKey,
		p.KubeletClientCert, p.EtcdClientCert, p.FrontProxyClientCert} {
		if before[f] != after[f] {
			t.Errorf("%s changed", f)
		}
	}
	if n := len(oldFiles(t, cfg.Dir)); n != 2*len(serving) {
		t.Errorf("%d .old- files, want %d: %v", n, 2*len(serving), oldFiles(t, cfg.Dir))
	}
}

func TestForeignOrExpiringLeafIsReplaced(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)

	// A scheduler cert from another cluster's CA (e.g. a half-done restore).
	other := testConfig(t)
	op := mustEnsure(t, other)
	for src, dst := range map[string]string{op.SchedulerCert: p.SchedulerCert, op.SchedulerKey: p.SchedulerKey} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustEnsure(t, cfg)
	c := readCert(t, p.SchedulerCert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(t, p.ClientCACert), CurrentTime: testNow,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("scheduler cert after Ensure: %v", err)
	}
	if n := len(oldFiles(t, cfg.Dir)); n != 2 {
		t.Errorf("%d .old- files after replacing a foreign leaf, want 2", n)
	}

	// Eight months on, every leaf has under a third of its year left.
	caBefore := snapshot(t, p.CACert, p.CAKey, p.ClientCACert, p.EtcdPeerCACert)
	later := testNow.AddDate(0, 8, 0)
	cfg.Now = func() time.Time { return later }
	mustEnsure(t, cfg)
	for _, f := range []string{p.APIServerCert, p.AdminCert, p.EtcdPeerCert, p.SchedulerCert} {
		if got := readCert(t, f).NotAfter; !got.Equal(later.Add(leafValidity)) {
			t.Errorf("%s NotAfter = %v, want renewed to %v", filepath.Base(f), got, later.Add(leafValidity))
		}
	}
	if ch := changedFiles(caBefore, snapshot(t, p.CACert, p.CAKey, p.ClientCACert, p.EtcdPeerCACert)); len(ch) != 0 {
		t.Errorf("CAs changed on leaf renewal: %v", ch)
	}
}

func TestCAKeyMismatchIsAnError(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)

	// Another valid key in place of the client CA's.
	other := mustEnsure(t, testConfig(t))
	data, err := os.ReadFile(other.ClientCAKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.ClientCAKey, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, cfg.Dir)
	_, err = Ensure(context.Background(), cfg)
	if err == nil {
		t.Fatal("Ensure succeeded with a CA key that does not match its cert")
	}
	if !strings.Contains(err.Error(), p.ClientCAKey) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("error %q does not name %s and the mismatch", err, p.ClientCAKey)
	}
	if ch := changedFiles(before, snapshot(t, cfg.Dir)); len(ch) != 0 {
		t.Errorf("failed Ensure changed %v", ch)
	}
}

func TestCACertWithoutKeyIsAnError(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	if err := os.Remove(p.EtcdPeerCAKey); err != nil {
		t.Fatal(err)
	}
	_, err := Ensure(context.Background(), cfg)
	if err == nil {
		t.Fatal("Ensure succeeded with a CA cert and no key")
	}
	if !strings.Contains(err.Error(), p.EtcdPeerCAKey) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("error %q does not name the missing key %s", err, p.EtcdPeerCAKey)
	}
	if _, err := os.Stat(p.EtcdPeerCAKey); err == nil {
		t.Error("a new CA key was created beside the old cert")
	}
}

func TestServiceAccountKeyPair(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	key, _, err := loadKey(p.ServiceAccountKey)
	if err != nil {
		t.Fatal(err)
	}
	if ec, ok := key.(*ecdsa.PrivateKey); !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("sa.key is %T, want ECDSA P-256", key)
	}
	data, _ := os.ReadFile(p.ServiceAccountPub)
	pub, err := parsePublicKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if !samePublicKey(pub, key.Public()) {
		t.Fatal("sa.pub does not match sa.key")
	}

	other := mustEnsure(t, testConfig(t))
	foreign, _ := os.ReadFile(other.ServiceAccountPub)
	if err := os.WriteFile(p.ServiceAccountPub, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Ensure(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), p.ServiceAccountPub) {
		t.Errorf("mismatched sa.pub: err = %v, want an error naming %s", err, p.ServiceAccountPub)
	}
}

func TestLooseKeyModeIsTightened(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	if err := os.Chmod(p.CAKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.AdminKey, 0o640); err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, cfg)
	for _, f := range []string{p.CAKey, p.AdminKey} {
		fi, _ := os.Stat(f)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o after Ensure, want 600", f, fi.Mode().Perm())
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no node IPs":      func(c *Config) { c.NodeIPs = nil },
		"no node name":     func(c *Config) { c.NodeName = "" },
		"no service CIDR":  func(c *Config) { c.ServiceCIDR = nil },
		"http server URL":  func(c *Config) { c.APIServerURL = "http://127.0.0.1:6443" },
		"no PKI dir":       func(c *Config) { c.Dir = "" },
		"no kubeconfigdir": func(c *Config) { c.KubeconfigDir = "" },
	} {
		cfg := testConfig(t)
		mutate(&cfg)
		if _, err := Ensure(context.Background(), cfg); err == nil {
			t.Errorf("%s: Ensure succeeded", name)
		}
	}
}

func TestCerts(t *testing.T) {
	cfg := testConfig(t)
	mustEnsure(t, cfg)
	// Produce .old- files, which must not be listed.
	cfg.NodeIPs = []net.IP{net.ParseIP("10.9.9.9")}
	mustEnsure(t, cfg)

	infos, err := (&PKI{Dir: cfg.Dir}).Certs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ci := range infos {
		names = append(names, ci.Name)
	}
	want := []string{"admin", "apiserver", "apiserver-kubelet-client", "ca", "client-ca", "controller-manager",
		"etcd/client", "etcd/peer", "etcd/peer-ca", "etcd/server", "etcd/server-ca", "front-proxy-client",
		"kubelet-client", "request-header-ca", "scheduler"}
	if !slices.Equal(names, want) {
		t.Fatalf("Certs names = %v, want %v", names, want)
	}
	for _, ci := range infos {
		if ci.IsCA != strings.HasSuffix(ci.Name, "ca") {
			t.Errorf("%s: IsCA = %v", ci.Name, ci.IsCA)
		}
		if !ci.NotAfter.After(ci.NotBefore) || ci.Subject == "" || ci.Issuer == "" {
			t.Errorf("%s: incomplete info %+v", ci.Name, ci)
		}
		if ci.Name == "apiserver" && !slices.ContainsFunc(ci.IPs, net.ParseIP("10.9.9.9").Equal) {
			t.Errorf("apiserver IPs %v lack the current node IP", ci.IPs)
		}
		if ci.Name == "etcd/server" && !slices.Contains(ci.DNSNames, "edge-1") {
			t.Errorf("etcd/server DNS names %v lack the node name", ci.DNSNames)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Ensure(ctx, testConfig(t)); err == nil {
		t.Error("Ensure succeeded with a canceled context")
	}
}
