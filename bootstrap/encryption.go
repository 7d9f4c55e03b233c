package bootstrap

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/kubox/kubox/internal/fsutil"
)

// The subset of apiserver.config.k8s.io/v1 EncryptionConfiguration that
// kubox writes. Mirrored here (field names as upstream) so this package does
// not pull in k8s.io/apiserver.
type encryptionConfiguration struct {
	APIVersion string                  `json:"apiVersion"`
	Kind       string                  `json:"kind"`
	Resources  []encryptionResourceSet `json:"resources"`
}

type encryptionResourceSet struct {
	Resources []string             `json:"resources"`
	Providers []encryptionProvider `json:"providers"`
}

type encryptionProvider struct {
	Secretbox *encryptionKeys `json:"secretbox,omitempty"`
	AESCBC    *encryptionKeys `json:"aescbc,omitempty"`
	AESGCM    *encryptionKeys `json:"aesgcm,omitempty"`
	Identity  *struct{}       `json:"identity,omitempty"`
}

type encryptionKeys struct {
	Keys []encryptionKey `json:"keys"`
}

type encryptionKey struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
}

const (
	encryptionAPIVersion = "apiserver.config.k8s.io/v1"
	encryptionKind       = "EncryptionConfiguration"
)

// ensureEncryptionConfig writes the apiserver's secrets-at-rest config once.
// Its key must never change: secrets in etcd (and in every snapshot) are
// encrypted with it, so an existing file is only checked, never rewritten.
func ensureEncryptionConfig(ctx context.Context, path string) error {
	ok, err := fsutil.Exists(path)
	if err != nil {
		return err
	}
	if ok {
		if err := tightenMode(path, modePrivate); err != nil {
			return err
		}
		return checkEncryptionConfig(path)
	}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("create encryption config: generate key: %w", err)
	}
	cfg := encryptionConfiguration{
		APIVersion: encryptionAPIVersion,
		Kind:       encryptionKind,
		Resources: []encryptionResourceSet{{
			Resources: []string{"secrets"},
			// secretbox first: new writes are encrypted; identity last so
			// secrets written before encryption was on stay readable.
			Providers: []encryptionProvider{
				{Secretbox: &encryptionKeys{Keys: []encryptionKey{{
					Name:   "key1",
					Secret: base64.StdEncoding.EncodeToString(secret),
				}}}},
				{Identity: &struct{}{}},
			},
		}},
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("create encryption config: %w", err)
	}
	if err := fsutil.WriteFileNew(path, data, modePrivate); err != nil {
		return fmt.Errorf("create encryption config: %w", err)
	}
	slog.InfoContext(ctx, "bootstrap: created encryption config", "path", path)
	return nil
}

// checkEncryptionConfig catches a truncated or foreign file now, with its
// name, rather than as an apiserver start failure later. It accepts any
// provider set an operator may have configured by hand.
func checkEncryptionConfig(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read encryption config: %w", err)
	}
	var cfg encryptionConfiguration
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		// The parser's message may quote file content, which holds the key:
		// name the file only.
		return fmt.Errorf("encryption config %s cannot be parsed: restore it from a backup; "+
			"without its key, encrypted secrets cannot be read", path)
	}
	if cfg.Kind != encryptionKind || len(cfg.Resources) == 0 {
		return fmt.Errorf("encryption config %s is not an %s with resources: restore it from a backup; "+
			"without its key, encrypted secrets cannot be read", path, encryptionKind)
	}
	return nil
}
