package airgap

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/kubox/kubox/internal/fsutil"
)

// KeyID names a public key: the first 16 hex digits of the sha256 of its
// PKIX encoding. It only helps a reader tell keys apart.
func KeyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// GenerateKeyFiles writes a new ed25519 key pair: the private key (PKCS#8
// PEM, 0600) to priv and the public key (PKIX PEM, 0644) to pub. Neither
// file may exist yet.
func GenerateKeyFiles(priv, pub string) (ed25519.PublicKey, error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	skDER, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	pkDER, err := x509.MarshalPKIXPublicKey(pk)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	if err := fsutil.WriteFileNew(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: skDER}), 0o600); err != nil {
		return nil, fmt.Errorf("write signing key %s (refusing to replace an existing key): %w", priv, err)
	}
	if err := fsutil.WriteFileNew(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkDER}), 0o644); err != nil {
		return nil, fmt.Errorf("write public key %s: %w", pub, err)
	}
	return pk, nil
}

// LoadPrivateKey reads an ed25519 private key (PKCS#8 PEM).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	sk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an ed25519 key (create one with \"kubox airgap key create\")", path)
	}
	return sk, nil
}

// LoadPublicKey reads an ed25519 public key (PKIX PEM).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	block, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(block)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: not an ed25519 key", path)
	}
	return pk, nil
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%s: not a PEM %q block (create keys with \"kubox airgap key create\")", path, typ)
	}
	return block.Bytes, nil
}

func sign(sk ed25519.PrivateKey, rawManifest []byte) ([]byte, error) {
	return marshalJSON(signature{
		Algorithm: "ed25519",
		KeyID:     KeyID(sk.Public().(ed25519.PublicKey)),
		Signature: ed25519.Sign(sk, rawManifest),
	})
}

// ErrUnsigned is returned when a signature is required and the bundle has none.
var ErrUnsigned = errors.New("the bundle is not signed and a trusted key is configured (airgap-public-key-file): sign it with \"kubox airgap bundle create --sign-key\", or set airgap-allow-unsigned to import unsigned bundles on purpose")

// SignaturePolicy says what an import demands of a bundle's signature.
type SignaturePolicy struct {
	// PublicKey, when set, must verify any signature the bundle carries,
	// and a bundle without one is refused unless AllowUnsigned: whoever
	// configured a key wants bundles checked, and an unsigned bundle would
	// bypass the check.
	PublicKey ed25519.PublicKey
	// Require refuses unsigned bundles (needs PublicKey), whatever
	// AllowUnsigned says.
	Require bool
	// AllowUnsigned imports unsigned bundles although PublicKey is set.
	AllowUnsigned bool
}

// requireSigned says whether a bundle without a signature is refused.
func (p SignaturePolicy) requireSigned() bool {
	return p.Require || (p.PublicKey != nil && !p.AllowUnsigned)
}

// Check applies the policy to a bundle. It returns whether the signature was
// verified.
func (p SignaturePolicy) Check(b *Reader) (bool, error) {
	if p.Require && p.PublicKey == nil {
		return false, errors.New("a signature is required but no trusted public key is configured (airgap-public-key-file)")
	}
	if b.sig == nil {
		if p.requireSigned() {
			return false, ErrUnsigned
		}
		return false, nil
	}
	if p.PublicKey == nil {
		return false, nil
	}
	if b.sig.Algorithm != "ed25519" {
		return false, fmt.Errorf("bundle signature: algorithm %q is not ed25519", b.sig.Algorithm)
	}
	if !ed25519.Verify(p.PublicKey, b.rawManifest, b.sig.Signature) {
		if b.sig.KeyID != KeyID(p.PublicKey) {
			return false, fmt.Errorf("bundle signature does not verify: signed by key %s, the trusted key is %s", b.sig.KeyID, KeyID(p.PublicKey))
		}
		return false, errors.New("bundle signature does not verify: the manifest was changed after signing")
	}
	return true, nil
}
