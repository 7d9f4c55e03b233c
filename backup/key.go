package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/kubox/kubox/internal/fsutil"
)

// maxKeyFileSize bounds how much of a key file is read: an identity file is
// a few hundred bytes, and a bound keeps a wrong path (a disk image) from
// being read into memory.
const maxKeyFileSize = 64 << 10

// Key is a backup key: an age X25519 identity. Snapshots are encrypted to its
// public half and decrypted with it. The zero Key is not usable.
type Key struct {
	identity  *age.X25519Identity
	recipient *age.X25519Recipient
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate backup key: %w", err)
	}
	return &Key{identity: id, recipient: id.Recipient()}, nil
}

// Recipient returns the key's public half (age1...), which snapshot headers
// record; it is safe to print.
func (k *Key) Recipient() string { return k.recipient.String() }

// String returns a description naming the public key only, so a Key printed
// by mistake (%v in a log line) never shows the secret.
func (k *Key) String() string { return "backup key " + k.Recipient() }

// GoString is String, for %#v.
func (k *Key) GoString() string { return k.String() }

// fileContent renders the key as an age identity file, as age-keygen does, so
// the age tool can use it to open a snapshot body in an emergency.
func (k *Key) fileContent(now time.Time) []byte { return k.fileContentSigner(now, "") }

// fileContentSigner is fileContent naming signer, the trusted snapshot
// signing public key, in a comment (age ignores comments).
func (k *Key) fileContentSigner(now time.Time, signer string) []byte {
	var b bytes.Buffer
	b.WriteString("# kubox backup key (age X25519 identity). Snapshots encrypted to it cannot be\n")
	b.WriteString("# read without it: keep a copy off this box, and not beside the snapshots.\n")
	fmt.Fprintf(&b, "# created: %s\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", k.Recipient())
	if signer != "" {
		b.WriteString("# Snapshots must be signed by the signing key (the .sign file made with this one):\n")
		b.WriteString(signerComment + signer + "\n")
	}
	b.WriteString(k.identity.String())
	b.WriteString("\n")
	return b.Bytes()
}

// WriteKeyFile creates a new key and writes it to path with mode 0600,
// creating the parent directory (0700) if needed. It refuses to replace an
// existing file (error wrapping fs.ErrExist): losing the old key would make
// every snapshot made with it unreadable.
func WriteKeyFile(path string) (*Key, error) { return writeKeyFile(path, "") }

// writeKeyFile is WriteKeyFile, naming signer in the file (see
// fileContentSigner) unless it is "".
func writeKeyFile(path, signer string) (*Key, error) {
	k, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("write backup key %s: %w; refusing to replace it, snapshots made with it would become unreadable", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("write backup key %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, modeDir); err != nil {
		return nil, fmt.Errorf("write backup key %s: %w", path, err)
	}
	if err := fsutil.WriteFileNew(path, k.fileContentSigner(time.Now(), signer), modeFile); err != nil {
		return nil, fmt.Errorf("write backup key %s: %w", path, err)
	}
	return k, nil
}

// LoadKeyFile reads a key file written by WriteKeyFile (or age-keygen). It
// fails with an error wrapping fs.ErrNotExist if the file is missing,
// ErrKeyPermissions if group or others have any access to it, and ErrNotKey
// if it does not hold exactly one age X25519 identity.
func LoadKeyFile(path string) (*Key, error) {
	data, err := readSecretFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load backup key %s: %w (create one with \"kubox snapshot key create\")", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("load backup key %s: %w", path, err)
	}
	k, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("load backup key %s: %w", path, err)
	}
	return k, nil
}

// parseKey parses an age identity file holding exactly one X25519 identity.
// A file with several would leave it ambiguous which one new snapshots are
// encrypted to.
func parseKey(data []byte) (*Key, error) {
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		// age's parse errors never include key material.
		return nil, fmt.Errorf("%w: %v", ErrNotKey, err)
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("%w: holds %d identities, want exactly one", ErrNotKey, len(ids))
	}
	id, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return nil, fmt.Errorf("%w: only X25519 identities (AGE-SECRET-KEY-1...) are supported", ErrNotKey)
	}
	return &Key{identity: id, recipient: id.Recipient()}, nil
}
