package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// CA rotation, in two steps with a transition period between them:
//
// RotateCA gives each of the five CAs a new key and certificate. <ca>.crt
// becomes a bundle, new certificate first (the first certificate and
// <ca>.key sign, see ensureCA) and the old one after it, so everything that
// reads the file as a trust bundle (apiserver, kubelet, etcd, kubeconfigs)
// trusts both. <ca>.cross.pem holds the new CA certificate signed by the
// old key; every leaf issued during the transition carries it after the
// leaf, so a peer that still trusts only the old CA (another box, an old
// kubeconfig) verifies new leaves through it. Every leaf is retired: the
// next Ensure (a running server within seconds, or the next start) issues
// it from the new CA.
//
// FinishCARotation drops the old CAs: the bundles hold only the new
// certificates, the cross certificates go, and the leaves are issued again
// without them. Old files are moved aside (.old-<time>), never deleted.

// crossSuffix names the cross-signed new CA of a CA in transition.
const crossSuffix = ".cross.pem"

// ErrRotationInProgress and ErrNoRotation are the two wrong-order errors.
var (
	ErrRotationInProgress = errors.New("a CA rotation is in progress: finish it first with kubox certs rotate-ca --finish")
	ErrNoRotation         = errors.New("no CA rotation in progress: start one with kubox certs rotate-ca")
)

// caFiles lists each CA's name, cert and key path.
func (p *PKI) caFiles() []struct{ name, cert, key string } {
	return []struct{ name, cert, key string }{
		{"ca", p.CACert, p.CAKey},
		{"client-ca", p.ClientCACert, p.ClientCAKey},
		{"request-header-ca", p.RequestHeaderCACert, p.RequestHeaderCAKey},
		{"etcd-server-ca", p.EtcdServerCACert, p.EtcdServerCAKey},
		{"etcd-peer-ca", p.EtcdPeerCACert, p.EtcdPeerCAKey},
	}
}

func crossPath(caCert string) string { return strings.TrimSuffix(caCert, ".crt") + crossSuffix }

// RotationInProgress tells whether RotateCA ran and FinishCARotation not yet.
func (p *PKI) RotationInProgress() (bool, error) {
	for _, ca := range p.caFiles() {
		ok, err := fsutil.Exists(crossPath(ca.cert))
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// RotateCA starts a CA rotation of the PKI in p.Dir (see above) and
// returns one line per CA rotated. The CAs must exist.
func (p *PKI) RotateCA(ctx context.Context, now time.Time) ([]string, error) {
	if busy, err := p.RotationInProgress(); err != nil {
		return nil, err
	} else if busy {
		return nil, ErrRotationInProgress
	}
	// Load everything first: a damaged CA stops the rotation before any
	// file changes.
	type loaded struct {
		name, cert, key string
		old             *authority
	}
	var cas []loaded
	for _, ca := range p.caFiles() {
		a, err := loadAuthority(ca.cert, ca.key)
		if err != nil {
			return nil, fmt.Errorf("rotate CA %s: %w", ca.name, err)
		}
		cas = append(cas, loaded{ca.name, ca.cert, ca.key, a})
	}
	var done []string
	for _, ca := range cas {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		key, err := newKey()
		if err != nil {
			return done, fmt.Errorf("rotate CA %s: %w", ca.name, err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return done, fmt.Errorf("rotate CA %s: %w", ca.name, err)
		}
		cn := "kubox-" + ca.name + "@" + strconv.FormatInt(now.Unix(), 10)
		newPEM, err := selfSignCA(cn, key, now)
		if err != nil {
			return done, fmt.Errorf("rotate CA %s: %w", ca.name, err)
		}
		newCert, err := parseCert(newPEM)
		if err != nil {
			return done, err
		}
		// The same subject and key as the new CA, issued by the old one.
		crossDER, err := x509.CreateCertificate(rand.Reader, newCert, ca.old.cert, key.Public(), ca.old.key)
		if err != nil {
			return done, fmt.Errorf("rotate CA %s: cross-sign: %w", ca.name, err)
		}
		crossPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crossDER})
		oldFirst := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.old.cert.Raw})

		// Keep the old pair, then replace the files atomically: at every
		// point the PKI is either the old one or the new one, or (between
		// the two renames) a key that does not match its certificate,
		// which ensureCA refuses loudly rather than creating a fresh CA.
		if err := keepCopy(ca.key, modePrivate, now); err != nil {
			return done, err
		}
		if err := keepCopy(ca.cert, modeCert, now); err != nil {
			return done, err
		}
		if err := fsutil.WriteFileAtomic(crossPath(ca.cert), crossPEM, modeCert); err != nil {
			return done, err
		}
		if err := fsutil.WriteFileAtomic(ca.key, keyPEM, modePrivate); err != nil {
			return done, err
		}
		if err := fsutil.WriteFileAtomic(ca.cert, append(newPEM, oldFirst...), modeCert); err != nil {
			return done, err
		}
		slog.InfoContext(ctx, "bootstrap: rotated CA", "name", ca.name, "new", cn, "old", ca.old.cert.Subject.CommonName)
		done = append(done, fmt.Sprintf("%s: new %s; old %s still trusted", ca.name, cn, ca.old.cert.Subject.CommonName))
	}
	if err := p.retireLeaves(now); err != nil {
		return done, err
	}
	return done, nil
}

// FinishCARotation ends the transition: the old CAs are trusted no more.
func (p *PKI) FinishCARotation(ctx context.Context, now time.Time) ([]string, error) {
	if busy, err := p.RotationInProgress(); err != nil {
		return nil, err
	} else if !busy {
		return nil, ErrNoRotation
	}
	var done []string
	for _, ca := range p.caFiles() {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		a, err := loadAuthority(ca.cert, ca.key)
		if err != nil {
			return done, fmt.Errorf("finish CA rotation %s: %w", ca.name, err)
		}
		only := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
		if !bytes.Equal(only, a.certPEM) {
			if err := keepCopy(ca.cert, modeCert, now); err != nil {
				return done, err
			}
			if err := fsutil.WriteFileAtomic(ca.cert, only, modeCert); err != nil {
				return done, err
			}
		}
		if _, err := os.Lstat(crossPath(ca.cert)); err == nil {
			if _, err := fsutil.MoveAside(crossPath(ca.cert), now); err != nil {
				return done, err
			}
		}
		done = append(done, fmt.Sprintf("%s: only %s trusted", ca.name, a.cert.Subject.CommonName))
	}
	if err := p.retireLeaves(now); err != nil {
		return done, err
	}
	return done, nil
}

// loadAuthority loads an existing CA without creating anything.
func loadAuthority(certPath, keyPath string) (*authority, error) {
	cert, certPEM, err := loadCert(certPath)
	if err != nil {
		return nil, err
	}
	key, _, err := loadKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s is not a CA certificate matching %s", certPath, keyPath)
	}
	return &authority{certPath: certPath, cert: cert, key: key, certPEM: certPEM}, nil
}

// keepCopy writes a copy of path beside it as <path>.old-<unix nanos>.
func keepCopy(path string, mode fs.FileMode, now time.Time) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return fsutil.WriteFileNew(path+".old-"+strconv.FormatInt(now.UnixNano(), 10), data, mode)
}

// retireLeaves moves every leaf aside so the next Ensure issues it anew.
func (p *PKI) retireLeaves(now time.Time) error {
	for _, path := range p.LeafCertFiles() {
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if _, err := fsutil.MoveAside(path, now); err != nil {
			return err
		}
	}
	return nil
}

// transitionChain returns certPEM with ca's cross-signed certificate after
// it while a rotation of ca is in progress, so the leaf verifies against
// the old CA too.
func transitionChain(ca *authority, certPEM []byte) ([]byte, error) {
	cross, err := os.ReadFile(crossPath(ca.certPath))
	if errors.Is(err, fs.ErrNotExist) {
		return certPEM, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(crossPath(ca.certPath)), err)
	}
	return append(certPEM, cross...), nil
}

// SignerCertFile writes the cluster CA's own certificate (the first of
// ca.crt, without an old CA kept trusted during a rotation) to
// ca.signer.pem and returns its path: the controller-manager's CSR signer
// insists on exactly one certificate in its file. Call it at each start.
func (p *PKI) SignerCertFile() (string, error) {
	a, err := loadAuthority(p.CACert, p.CAKey)
	if err != nil {
		return "", fmt.Errorf("cluster CA signer certificate: %w", err)
	}
	path := filepath.Join(p.Dir, "ca.signer.pem")
	if _, err := fsutil.WriteFileIfChanged(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}), modeCert); err != nil {
		return "", fmt.Errorf("cluster CA signer certificate: %w", err)
	}
	return path, nil
}
