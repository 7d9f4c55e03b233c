package bootstrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func TestShortLifetimeRenewal(t *testing.T) {
	cfg := testConfig(t)
	cfg.LeafLifetime = 3 * time.Minute
	now := testNow
	cfg.Now = func() time.Time { return now }
	p := mustEnsure(t, cfg)
	certs, err := p.Certs()
	if err != nil {
		t.Fatal(err)
	}
	api := certByName(t, certs, "apiserver")
	if got := api.NotAfter.Sub(api.NotBefore); got != 3*time.Minute+18*time.Second {
		t.Fatalf("apiserver lifetime %v, want 3m18s (18s backdated)", got)
	}
	if d := Due(certs, now); len(d) != 0 {
		t.Fatalf("due right after issue: %v", d)
	}
	// Nothing due: Renew changes nothing.
	if _, renewed, err := Renew(context.Background(), cfg); err != nil || len(renewed) != 0 {
		t.Fatalf("Renew at issue time: %v %v", renewed, err)
	}
	// Two minutes on, less than a third (66s) is left: every leaf renews,
	// no CA does, and the kubeconfigs carry the new client certs.
	now = now.Add(2*time.Minute + 10*time.Second)
	if d := Due(certs, now); len(d) != 10 {
		t.Fatalf("due after 2m10s: %d leaves, want 10", len(d))
	}
	_, renewed, err := Renew(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(renewed) != 10 || slices.Contains(renewed, "ca") {
		t.Fatalf("renewed %v", renewed)
	}
	after, _ := p.Certs()
	if !certByName(t, after, "admin").NotAfter.After(certByName(t, certs, "admin").NotAfter) {
		t.Fatal("admin cert not renewed")
	}
	kc, err := clientcmd.LoadFromFile(cfg.AdminKubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	adminPEM, _ := os.ReadFile(p.AdminCert)
	if string(kc.AuthInfos[kubeconfigName].ClientCertificateData) != string(adminPEM) {
		t.Fatal("admin kubeconfig copy does not hold the renewed cert")
	}
}

func TestRetire(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	before := readCert(t, p.SchedulerCert)
	moved, err := p.Retire("scheduler", testNow)
	if err != nil || len(moved) != 2 {
		t.Fatalf("Retire: %v %v", moved, err)
	}
	if _, err := os.Stat(p.SchedulerCert); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("cert still in place")
	}
	mustEnsure(t, cfg)
	after := readCert(t, p.SchedulerCert)
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatal("not re-issued")
	}
	if _, err := p.Retire("ca", testNow); !errors.Is(err, ErrNotLeaf) {
		t.Fatalf("Retire(ca) = %v, want ErrNotLeaf", err)
	}
	if _, err := p.Retire("../../etc/passwd", testNow); !errors.Is(err, ErrNotLeaf) {
		t.Fatalf("Retire(outside) = %v", err)
	}
	if _, err := p.Retire("nosuch", testNow); !errors.Is(err, ErrNotLeaf) {
		t.Fatalf("Retire(nosuch) = %v", err)
	}
}

func certByName(t *testing.T, certs []CertInfo, name string) CertInfo {
	t.Helper()
	for _, c := range certs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no certificate %q", name)
	return CertInfo{}
}

// TestRetireKubeletServing: a kubelet serving cert of an earlier kubox is
// moved aside (kept), not left to expire unrenewed.
func TestRetireKubeletServing(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	stale := filepath.Join(p.Dir, "kubelet-serving.crt")
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, cfg)
	if _, err := os.Stat(stale); err == nil {
		t.Error("kubelet-serving.crt still in place")
	}
	if old := oldFiles(t, p.Dir); len(old) != 1 || !strings.HasPrefix(filepath.Base(old[0]), "kubelet-serving.crt.old-") {
		t.Errorf("moved aside: %v", old)
	}
}
