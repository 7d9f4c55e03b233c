package bootstrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
)

// A join bundle (the shared PKI a joining box needs) is stored in the
// cluster only sealed with a key derived from one join token's secret: an
// API object never holds a CA key, the service-account key or the
// encryption config in the clear, and only the holder of that token can
// open it. The key is HKDF-SHA256 of the token secret, salted with the CA
// hash and bound to the token id; the cipher is AES-256-GCM with a random
// nonce, the token id and CA hash as additional data, so a bundle moved to
// another token's slot or tampered with does not open.

// JoinBundle is what a join token unlocks.
type JoinBundle struct {
	// Files are the shared PKI files (see SharedFiles).
	Files map[string][]byte `json:"files"`
	// Reusable tokens are not deleted after a join.
	Reusable bool `json:"reusable,omitempty"`
}

const sealVersion = 1

// sealed is the stored form of a bundle.
type sealed struct {
	Version    int    `json:"v"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// ErrOpen says a sealed bundle did not open: another token's, or altered.
var ErrOpen = errors.New("the sealed join bundle does not open with this token (wrong token or altered bundle)")

func tokenAEAD(tok Token) (cipher.AEAD, []byte, error) {
	key, err := hkdf.Key(sha256.New, []byte(tok.Secret), []byte(tok.CAHash), "kubox join bundle v1 "+tok.ID, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("derive the join bundle key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return aead, []byte("kubox-join:" + tok.ID + ":" + tok.CAHash), nil
}

// SealBundle encrypts b for the holder of tok.
func SealBundle(tok Token, b JoinBundle) ([]byte, error) {
	plain, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	aead, ad, err := tokenAEAD(tok)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal the join bundle: %w", err)
	}
	return json.Marshal(sealed{Version: sealVersion, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, plain, ad)})
}

// OpenBundle decrypts what SealBundle made for tok.
func OpenBundle(tok Token, data []byte) (JoinBundle, error) {
	var s sealed
	if err := json.Unmarshal(data, &s); err != nil || s.Version != sealVersion {
		return JoinBundle{}, fmt.Errorf("%w: not a version %d sealed bundle", ErrOpen, sealVersion)
	}
	aead, ad, err := tokenAEAD(tok)
	if err != nil {
		return JoinBundle{}, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return JoinBundle{}, ErrOpen
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, ad)
	if err != nil {
		return JoinBundle{}, ErrOpen
	}
	var b JoinBundle
	if err := json.Unmarshal(plain, &b); err != nil {
		return JoinBundle{}, fmt.Errorf("sealed join bundle: %w", err)
	}
	return b, nil
}
