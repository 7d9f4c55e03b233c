package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestSealBundle(t *testing.T) {
	tok, err := NewToken(strings.Repeat("0f", 32))
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----\n")
	in := JoinBundle{Files: map[string][]byte{"ca.key": key, "ca.crt": []byte("cert")}, Reusable: true}
	data, err := SealBundle(tok, in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY")) || bytes.Contains(data, []byte("secret")) {
		t.Fatalf("sealed bundle holds the plaintext: %s", data)
	}
	got, err := OpenBundle(tok, data)
	if err != nil || !got.Reusable || !bytes.Equal(got.Files["ca.key"], key) || string(got.Files["ca.crt"]) != "cert" {
		t.Fatalf("OpenBundle = %+v, %v", got, err)
	}
	again, _ := SealBundle(tok, in)
	if bytes.Equal(again, data) {
		t.Error("two seals of one bundle are identical: the nonce is not random")
	}

	wrongSecret, wrongID, wrongCA := tok, tok, tok
	wrongSecret.Secret = "0123456789abcdef"
	wrongID.ID = "zzzzzz"
	wrongCA.CAHash = strings.Repeat("ab", 32)
	for name, other := range map[string]Token{"secret": wrongSecret, "id": wrongID, "ca": wrongCA} {
		if _, err := OpenBundle(other, data); !errors.Is(err, ErrOpen) {
			t.Errorf("opened with a token with another %s: %v", name, err)
		}
	}

	var s sealed
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	tamper := func(f func(*sealed)) []byte {
		c := sealed{Version: s.Version, Nonce: bytes.Clone(s.Nonce), Ciphertext: bytes.Clone(s.Ciphertext)}
		f(&c)
		out, _ := json.Marshal(c)
		return out
	}
	for name, bad := range map[string][]byte{
		"flipped ciphertext bit": tamper(func(c *sealed) { c.Ciphertext[len(c.Ciphertext)/2] ^= 1 }),
		"flipped nonce bit":      tamper(func(c *sealed) { c.Nonce[0] ^= 1 }),
		"truncated":              tamper(func(c *sealed) { c.Ciphertext = c.Ciphertext[:len(c.Ciphertext)-1] }),
		"short nonce":            tamper(func(c *sealed) { c.Nonce = c.Nonce[:4] }),
		"other version":          tamper(func(c *sealed) { c.Version = 2 }),
		"not json":               []byte("garbage"),
	} {
		if _, err := OpenBundle(tok, bad); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: opened or wrong error: %v", name, err)
		}
	}
}
