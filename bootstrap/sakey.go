package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/kubox/kubox/internal/fsutil"
)

// ensureServiceAccountKey loads or creates the key pair that signs and
// verifies service-account tokens. Every token in the cluster depends on it,
// so, like a CA, a mismatch is an error for a human rather than a reason to
// replace anything.
func ensureServiceAccountKey(ctx context.Context, keyPath, pubPath string) error {
	haveKey, err := fsutil.Exists(keyPath)
	if err != nil {
		return err
	}
	havePub, err := fsutil.Exists(pubPath)
	if err != nil {
		return err
	}
	if havePub && !haveKey {
		return fmt.Errorf("service-account public key %s exists but its private key %s is missing: "+
			"restore %s from a backup; or move %s aside to create a new pair (existing service-account "+
			"tokens then stop working and are re-issued)", pubPath, keyPath, keyPath, pubPath)
	}

	if !haveKey {
		k, err := newKey()
		if err != nil {
			return fmt.Errorf("create service-account key: %w", err)
		}
		keyPEM, err := encodeKey(k)
		if err != nil {
			return fmt.Errorf("create service-account key: %w", err)
		}
		if err := fsutil.WriteFileNew(keyPath, keyPEM, modePrivate); err != nil {
			return fmt.Errorf("create service-account key: %w", err)
		}
		slog.InfoContext(ctx, "bootstrap: created service-account key", "path", keyPath)
	}
	if err := tightenMode(keyPath, modePrivate); err != nil {
		return err
	}
	key, _, err := loadKey(keyPath)
	if err != nil {
		return fmt.Errorf("load service-account key: %w", err)
	}

	if !havePub {
		// The public half is derived, so a missing one is simply written.
		pubPEM, err := encodePublicKey(key.Public())
		if err != nil {
			return fmt.Errorf("write service-account public key: %w", err)
		}
		if err := fsutil.WriteFileNew(pubPath, pubPEM, modeCert); err != nil {
			return fmt.Errorf("write service-account public key: %w", err)
		}
		return nil
	}
	data, err := os.ReadFile(pubPath)
	if err != nil {
		return fmt.Errorf("read service-account public key: %w", err)
	}
	pub, err := parsePublicKey(data)
	if err != nil {
		return fmt.Errorf("parse service-account public key %s: %w", pubPath, err)
	}
	if !samePublicKey(pub, key.Public()) {
		return fmt.Errorf("service-account public key %s does not match private key %s: "+
			"restore the matching pair from a backup, or move %s aside to have it derived from %s again",
			pubPath, keyPath, pubPath, keyPath)
	}
	return nil
}
