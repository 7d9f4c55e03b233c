package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// Renewal: Ensure already re-issues every leaf that NeedsRenewal (and
// rewrites the kubeconfigs that embed one), so renewing a running node is
// calling Ensure again with the same Config. What this file adds is the
// view from outside: which files are leaves, which leaves are due, and
// retiring a leaf on request (`kubox certs rotate`).

// LeafCertFiles are the cert and key files of every leaf kubox issues; if
// one is missing, the next Ensure re-issues that leaf.
func (p *PKI) LeafCertFiles() []string {
	return []string{
		p.APIServerCert, p.APIServerKey,
		p.EtcdServerCert, p.EtcdServerKey, p.EtcdPeerCert, p.EtcdPeerKey, p.EtcdClientCert, p.EtcdClientKey,
		p.FrontProxyClientCert, p.FrontProxyClientKey, p.APIServerKubeletClientCert, p.APIServerKubeletClientKey,
		p.KubeletClientCert, p.KubeletClientKey, p.ControllerManagerCert, p.ControllerManagerKey,
		p.SchedulerCert, p.SchedulerKey, p.AdminCert, p.AdminKey,
	}
}

// Layout returns the paths of a PKI in dir (kubeconfigs in kubeconfigDir)
// without creating or reading anything.
func Layout(dir, kubeconfigDir string) *PKI { return layout(dir, kubeconfigDir) }

// RenewalWindow is how close to expiry `kubox certs check` starts to
// complain about a leaf.
const RenewalWindow = 30 * 24 * time.Hour

// Due lists the leaves among certs that NeedsRenewal at now.
func Due(certs []CertInfo, now time.Time) []CertInfo {
	var out []CertInfo
	for _, c := range certs {
		if c.IsCA {
			continue
		}
		lifetime := c.NotAfter.Sub(c.NotBefore)
		if !now.Before(c.NotBefore) && (lifetime <= 0 || c.NotAfter.Sub(now) < lifetime/3) {
			out = append(out, c)
		}
	}
	return out
}

// ErrNotLeaf is returned by Retire for a CA or an unknown name.
var ErrNotLeaf = errors.New("not a leaf certificate")

// Retire moves the cert and key of the leaf called name (a CertInfo.Name,
// e.g. "apiserver", "etcd/server") aside, so the next Ensure issues it anew
// with a new key. CAs are refused: kubox does not rotate them.
func (p *PKI) Retire(name string, now time.Time) ([]string, error) {
	name = strings.TrimSuffix(name, ".crt")
	certPath := filepath.Join(p.Dir, filepath.FromSlash(name)+".crt")
	keyPath := strings.TrimSuffix(certPath, ".crt") + ".key"
	if rel, err := filepath.Rel(p.Dir, certPath); err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNotLeaf)
	}
	cert, _, err := loadCert(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNotLeaf)
	}
	if err != nil {
		return nil, err
	}
	if cert.IsCA {
		return nil, fmt.Errorf("certificate %q is a CA: %w (kubox does not rotate CAs)", name, ErrNotLeaf)
	}
	var moved []string
	for _, path := range []string{certPath, keyPath} {
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		old, err := fsutil.MoveAside(path, now)
		if err != nil {
			return moved, err
		}
		moved = append(moved, old)
	}
	return moved, nil
}

// Renew runs Ensure, which re-issues every leaf that is due or missing,
// and reports the names of the certificates whose expiry changed.
func Renew(ctx context.Context, cfg Config) (*PKI, []string, error) {
	before := map[string]time.Time{}
	if certs, err := Layout(cfg.Dir, cfg.KubeconfigDir).Certs(); err == nil {
		for _, c := range certs {
			before[c.Name] = c.NotAfter
		}
	}
	p, err := Ensure(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	certs, err := p.Certs()
	if err != nil {
		return p, nil, err
	}
	var renewed []string
	for _, c := range certs {
		if t, ok := before[c.Name]; !ok || !t.Equal(c.NotAfter) {
			renewed = append(renewed, c.Name)
		}
	}
	return p, renewed, nil
}
