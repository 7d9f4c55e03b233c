package bootstrap

import (
	"crypto/x509"
	"time"
)

// NeedsRenewal reports whether cert has less than a third of its lifetime
// left at now (an expired cert included). Renewing at two thirds leaves
// months of slack for boxes that are rarely restarted.
//
// A cert that is not valid yet (now before NotBefore) is not renewed: that
// means the clock is behind, and a cert issued from a wrong clock would be
// worse than the one on disk.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	if cert == nil {
		return true
	}
	if now.Before(cert.NotBefore) {
		return false
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	if lifetime <= 0 {
		return true
	}
	return cert.NotAfter.Sub(now) < lifetime/3
}
