package bootstrap

import (
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CertInfo describes one certificate file of the PKI, for expiry checks and
// metrics. It holds no key material.
type CertInfo struct {
	Name      string // path relative to the PKI dir without ".crt", e.g. "apiserver", "etcd/server"
	Path      string
	Issuer    string
	Subject   string
	NotBefore time.Time
	NotAfter  time.Time
	IsCA      bool
	DNSNames  []string
	IPs       []net.IP
}

// Certs describes every certificate file (*.crt) under p.Dir, sorted by
// name. It reads the directory rather than p's fields so it also works on a
// PKI{Dir: ...} built by a command that must not create anything. Files
// moved aside (*.crt.old-*) are not included.
func (p *PKI) Certs() ([]CertInfo, error) {
	var out []CertInfo
	err := filepath.WalkDir(p.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("list certificates: %w", err)
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".crt") {
			return nil
		}
		cert, _, err := loadCert(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(p.Dir, path)
		if err != nil {
			return fmt.Errorf("list certificates: %w", err)
		}
		out = append(out, CertInfo{
			Name:      strings.TrimSuffix(filepath.ToSlash(rel), ".crt"),
			Path:      path,
			Issuer:    cert.Issuer.String(),
			Subject:   cert.Subject.String(),
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
			IsCA:      cert.IsCA,
			DNSNames:  cert.DNSNames,
			IPs:       cert.IPAddresses,
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b CertInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
