package bootstrap

import (
	"context"
	"crypto/x509"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testNow is a fixed clock so certificate times are predictable.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testConfig(t *testing.T) Config {
	t.Helper()
	root := t.TempDir()
	_, svc, err := net.ParseCIDR("10.43.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Dir:                 filepath.Join(root, "var/lib/kubox/pki"),
		KubeconfigDir:       filepath.Join(root, "var/lib/kubox/kubeconfig"),
		NodeName:            "edge-1",
		NodeIPs:             []net.IP{net.ParseIP("192.168.50.10")},
		ServiceCIDR:         svc,
		APIServerURL:        "https://127.0.0.1:6443",
		AdminKubeconfigPath: filepath.Join(root, "etc/kubox/kubox.yaml"),
		Now:                 func() time.Time { return testNow },
	}
}

func mustEnsure(t *testing.T, cfg Config) *PKI {
	t.Helper()
	p, err := Ensure(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return p
}

// fileState is what "unchanged" means for a file: same bytes, mode and mtime.
type fileState struct {
	data  string
	mode  fs.FileMode
	mtime time.Time
}

// snapshot records every file under the given roots (files or directories).
func snapshot(t *testing.T, roots ...string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[path] = fileState{data: string(data), mode: fi.Mode(), mtime: fi.ModTime()}
			return nil
		})
		if err != nil {
			t.Fatalf("snapshot %s: %v", root, err)
		}
	}
	return out
}

// changedFiles lists paths added, removed or changed between two snapshots.
func changedFiles(before, after map[string]fileState) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		if !ok || a != b {
			out = append(out, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// pathFields returns every path in p by field name, so tests cover fields
// added later without being told.
func pathFields(p *PKI) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(*p)
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		if name == "Dir" {
			continue
		}
		out[name] = v.Field(i).String()
	}
	return out
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, _, err := loadCert(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, caPath string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(readCert(t, caPath))
	return p
}

func oldFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), ".old-") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
