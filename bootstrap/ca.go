package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// ensureCA loads the CA at certPath/keyPath or creates it. A CA is the root
// of trust other nodes and kubeconfigs already hold, so anything odd about an
// existing one is an error for a human, never silently replaced.
func ensureCA(ctx context.Context, name, certPath, keyPath string, now time.Time) (*authority, error) {
	haveCert, err := fsutil.Exists(certPath)
	if err != nil {
		return nil, err
	}
	haveKey, err := fsutil.Exists(keyPath)
	if err != nil {
		return nil, err
	}

	if haveCert && !haveKey {
		return nil, fmt.Errorf("CA certificate %s exists but its private key %s is missing: "+
			"restore %s from a backup; or, to start this CA afresh (every node and kubeconfig "+
			"must then get the new %s), move %s aside", certPath, keyPath, keyPath, certPath, certPath)
	}

	if !haveKey {
		key, err := newKey()
		if err != nil {
			return nil, fmt.Errorf("create CA %s: %w", name, err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, fmt.Errorf("create CA %s: %w", name, err)
		}
		// Key first: a crash between the two writes leaves a key without a
		// cert, which the next start completes, never a cert without a key.
		if err := fsutil.WriteFileNew(keyPath, keyPEM, modePrivate); err != nil {
			return nil, fmt.Errorf("create CA %s: %w", name, err)
		}
		slog.InfoContext(ctx, "bootstrap: created CA key", "path", keyPath)
	}
	if err := tightenMode(keyPath, modePrivate); err != nil {
		return nil, err
	}
	key, _, err := loadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", name, err)
	}

	if !haveCert {
		// Subject made unique per CA so two clusters' CAs are told apart in
		// error messages and in `kubox certs check`.
		cn := "kubox-" + name + "@" + strconv.FormatInt(now.Unix(), 10)
		certPEM, err := selfSignCA(cn, key, now)
		if err != nil {
			return nil, fmt.Errorf("create CA %s: %w", name, err)
		}
		if err := fsutil.WriteFileNew(certPath, certPEM, modeCert); err != nil {
			return nil, fmt.Errorf("create CA %s: %w", name, err)
		}
		slog.InfoContext(ctx, "bootstrap: created CA certificate", "path", certPath)
	}

	cert, certPEM, err := loadCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", name, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("load CA %s: %s is not a CA certificate: restore the CA from a backup", name, certPath)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA %s: private key %s does not match certificate %s: "+
			"restore the matching pair from a backup; or, to start this CA afresh (every node and "+
			"kubeconfig must then get the new certificate), move both files aside", name, keyPath, certPath)
	}
	if !now.Before(cert.NotAfter) {
		return nil, fmt.Errorf("load CA %s: certificate %s expired on %s: rotate the CA (kubox certs rotate) "+
			"or check the system clock", name, certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &authority{certPath: certPath, cert: cert, key: key, certPEM: certPEM}, nil
}
