package bootstrap

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// leaf is one leaf certificate to keep in place: where it lives, which CA
// signs it and what it must say.
type leaf struct {
	name     string
	ca       *authority
	certPath string
	keyPath  string
	spec     certSpec
}

// ensureLeaf makes sure l's cert and key exist, match, and fit l.spec.
// Leaves can always be re-issued from their CA, so a leaf that does not fit
// is moved aside (kept, never deleted) and replaced rather than being an
// error: an unattended box should heal itself.
func ensureLeaf(ctx context.Context, l leaf, now time.Time) error {
	haveCert, err := fsutil.Exists(l.certPath)
	if err != nil {
		return err
	}
	haveKey, err := fsutil.Exists(l.keyPath)
	if err != nil {
		return err
	}

	var key crypto.Signer
	if haveKey {
		k, _, err := loadKey(l.keyPath)
		if err != nil {
			// An unreadable key is useless; keep it for inspection.
			if err := retire(ctx, l, "unreadable private key: "+err.Error(), now); err != nil {
				return err
			}
			haveCert, haveKey = false, false
		} else {
			key = k
		}
	}

	if haveCert {
		reason := ""
		if !haveKey {
			reason = "private key " + l.keyPath + " is missing"
		} else {
			cert, _, err := loadCert(l.certPath)
			if err != nil {
				reason = "unreadable certificate: " + err.Error()
			} else {
				reason = leafProblem(cert, key, l, now)
			}
		}
		if reason == "" {
			return tightenMode(l.keyPath, modePrivate)
		}
		if err := retire(ctx, l, reason, now); err != nil {
			return err
		}
		key = nil
	}

	if key == nil {
		k, err := newKey()
		if err != nil {
			return fmt.Errorf("issue %s certificate: %w", l.name, err)
		}
		keyPEM, err := encodeKey(k)
		if err != nil {
			return fmt.Errorf("issue %s certificate: %w", l.name, err)
		}
		// Key first, as for CAs: a lone key is reused on the next start.
		if err := fsutil.WriteFileNew(l.keyPath, keyPEM, modePrivate); err != nil {
			return fmt.Errorf("issue %s certificate: %w", l.name, err)
		}
		key = k
	} else if err := tightenMode(l.keyPath, modePrivate); err != nil {
		return err
	}

	certPEM, err := signLeaf(l.ca, l.spec, key.Public(), now)
	if err != nil {
		return fmt.Errorf("issue %s certificate: %w", l.name, err)
	}
	if certPEM, err = transitionChain(l.ca, certPEM); err != nil {
		return fmt.Errorf("issue %s certificate: %w", l.name, err)
	}
	if err := fsutil.WriteFileNew(l.certPath, certPEM, modeCert); err != nil {
		return fmt.Errorf("issue %s certificate: %w", l.name, err)
	}
	slog.InfoContext(ctx, "bootstrap: issued certificate", "name", l.name, "path", l.certPath, "ca", l.ca.certPath)
	return nil
}

// retire moves l's cert and key (whichever exist) aside.
func retire(ctx context.Context, l leaf, reason string, now time.Time) error {
	for _, p := range []string{l.certPath, l.keyPath} {
		ok, err := fsutil.Exists(p)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		old, err := fsutil.MoveAside(p, now)
		if err != nil {
			return fmt.Errorf("replace %s certificate (%s): %w", l.name, reason, err)
		}
		slog.InfoContext(ctx, "bootstrap: moved aside for re-issue", "name", l.name, "reason", reason, "old", old)
	}
	return nil
}

// leafProblem returns why cert (with key) can no longer serve as l, or "" if
// it is fine.
func leafProblem(cert *x509.Certificate, key crypto.Signer, l leaf, now time.Time) string {
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return "private key " + l.keyPath + " does not match the certificate"
	}
	// CheckSignatureFrom checks only the signature; the issuer name must match
	// too or TLS peers will not build the chain.
	if !bytes.Equal(cert.RawIssuer, l.ca.cert.RawSubject) || cert.CheckSignatureFrom(l.ca.cert) != nil {
		return "not signed by the current CA " + l.ca.certPath
	}
	if NeedsRenewal(cert, now) {
		return "expires " + cert.NotAfter.UTC().Format(time.RFC3339) + ", less than a third of its lifetime left"
	}
	if cert.Subject.CommonName != l.spec.commonName || !sameStrings(cert.Subject.Organization, l.spec.organization) {
		return fmt.Sprintf("subject is CN=%q O=%q, want CN=%q O=%q",
			cert.Subject.CommonName, cert.Subject.Organization, l.spec.commonName, l.spec.organization)
	}
	for _, u := range l.spec.usages {
		if !slices.Contains(cert.ExtKeyUsage, u) {
			return "lacks extended key usage " + usageName(u)
		}
	}
	for _, name := range l.spec.dnsNames {
		if !slices.ContainsFunc(cert.DNSNames, func(s string) bool { return strings.EqualFold(s, name) }) {
			return "does not cover DNS name " + name
		}
	}
	for _, ip := range l.spec.ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return "does not cover IP " + ip.String()
		}
	}
	return ""
}

// sameStrings compares two string lists as sets.
func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// usageName names an extended key usage for messages.
func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "server auth"
	case x509.ExtKeyUsageClientAuth:
		return "client auth"
	default:
		return fmt.Sprintf("%d", int(u))
	}
}
