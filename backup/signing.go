package backup

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/zeebo/blake3"

	"github.com/kubox/kubox/internal/fsutil"
)

// The backup key is three files side by side (K is --key-file):
//
//	K       the age identity: decrypts. Needed only to verify and restore,
//	        so it can live off the boxes. It also names the signing public
//	        key (a comment line), which readers trust.
//	K.pub   the public halves: the age recipient snapshots are encrypted
//	        to, and the signing public key. Not secret.
//	K.sign  the ed25519 signing key (0600): boxes sign every snapshot with
//	        it. Without it nobody can make a snapshot that verifies, even
//	        knowing the recipient.
const (
	publicSuffix  = ".pub"
	signingSuffix = ".sign"

	signerPrefix     = "ed25519:"
	signingKeyPrefix = "KUBOX-SNAPSHOT-SIGNING-KEY-"
	// signerComment is the identity file's line naming the trusted signer.
	signerComment = "# signing public key: "

	// sigMagic starts the signature block at the very end of a signed
	// (format version 3) snapshot: sigMagic, then the 64-byte signature.
	sigMagic    = "KUBOXSIG"
	sigBlockLen = len(sigMagic) + ed25519.SignatureSize
	// sigContext separates snapshot signatures from anything else the key
	// could ever sign.
	sigContext = "kubox snapshot signature v1\x00"
)

// PublicKeyFile is the file of the public halves beside the key file K.
func PublicKeyFile(keyFile string) string { return keyFile + publicSuffix }

// SigningKeyFile is the signing key file beside the key file K.
func SigningKeyFile(keyFile string) string { return keyFile + signingSuffix }

// SigningKey signs snapshots. The zero value is not usable.
type SigningKey struct{ priv ed25519.PrivateKey }

// GenerateSigningKey returns a new random signing key.
func GenerateSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate snapshot signing key: %w", err)
	}
	return &SigningKey{priv: priv}, nil
}

// Public returns the signing key's public half as snapshot headers and
// key files write it ("ed25519:<base64>").
func (s *SigningKey) Public() string {
	return formatSigner(s.priv.Public().(ed25519.PublicKey))
}

// String names the public half only, so the secret never reaches a log.
func (s *SigningKey) String() string { return "snapshot signing key " + s.Public() }

// GoString is String, for %#v.
func (s *SigningKey) GoString() string { return s.String() }

func formatSigner(pub ed25519.PublicKey) string {
	return signerPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParseSigner parses a signing public key as Public writes it.
func ParseSigner(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(s, signerPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: signing public key %q does not start with %q", ErrNotKey, s, signerPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize || formatSigner(b) != s {
		return nil, fmt.Errorf("%w: signing public key %q is not a base64 ed25519 public key", ErrNotKey, s)
	}
	return ed25519.PublicKey(b), nil
}

// PublicKeys is what K.pub holds: all a box needs to know to write a
// snapshot besides the signing key.
type PublicKeys struct {
	Recipient string // age1...: snapshots are encrypted to it
	Signer    string // ed25519:...: snapshots are signed by its private half
}

func (p PublicKeys) fileContent() []byte {
	var b bytes.Buffer
	b.WriteString("# kubox backup public keys: snapshots are encrypted to the recipient and signed\n")
	b.WriteString("# by the signing key (the .sign file beside this one). Not secret.\n")
	fmt.Fprintf(&b, "recipient: %s\nsigning-key: %s\n", p.Recipient, p.Signer)
	return b.Bytes()
}

// signingKeyContent renders a signing key file.
func (s *SigningKey) fileContent(now time.Time) []byte {
	var b bytes.Buffer
	b.WriteString("# kubox snapshot signing key (ed25519). Whoever holds it can make snapshots\n")
	b.WriteString("# that verify: keep it on the boxes only, mode 0600.\n")
	fmt.Fprintf(&b, "# created: %s\n", now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%s%s\n", signerComment, s.Public())
	b.WriteString(signingKeyPrefix + base64.StdEncoding.EncodeToString(s.priv.Seed()) + "\n")
	return b.Bytes()
}

// KeyFiles is what CreateKeyFiles made.
type KeyFiles struct {
	Public  PublicKeys
	Created []string // the files written, in order
}

// CreateKeyFiles creates the backup key at keyFile: the age identity, the
// signing key (keyFile.sign) and the public halves (keyFile.pub). If the
// identity exists already (a key made before snapshots were signed), it is
// kept as it is and only the missing signing key and public file are added.
// It never replaces an existing signing key or public file (error wrapping
// fs.ErrExist).
func CreateKeyFiles(keyFile string) (KeyFiles, error) {
	pubFile, signFile := PublicKeyFile(keyFile), SigningKeyFile(keyFile)
	for _, p := range []string{pubFile, signFile} {
		if _, err := os.Lstat(p); err == nil {
			return KeyFiles{}, fmt.Errorf("create backup key %s: %w; refusing to replace it", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return KeyFiles{}, fmt.Errorf("create backup key %s: %w", p, err)
		}
	}
	signer, err := GenerateSigningKey()
	if err != nil {
		return KeyFiles{}, err
	}
	var created []string
	key, err := LoadKeyFile(keyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if key, err = writeKeyFile(keyFile, signer.Public()); err != nil {
			return KeyFiles{}, err
		}
		created = append(created, keyFile)
	case err != nil:
		return KeyFiles{}, fmt.Errorf("create backup key: %w", err)
	}
	now := time.Now()
	if err := fsutil.WriteFileNew(signFile, signer.fileContent(now), modeFile); err != nil {
		return KeyFiles{}, fmt.Errorf("create backup key %s: %w", signFile, err)
	}
	created = append(created, signFile)
	pub := PublicKeys{Recipient: key.Recipient(), Signer: signer.Public()}
	if err := fsutil.WriteFileNew(pubFile, pub.fileContent(), 0o644); err != nil {
		return KeyFiles{}, fmt.Errorf("create backup key %s: %w", pubFile, err)
	}
	created = append(created, pubFile)
	return KeyFiles{Public: pub, Created: created}, nil
}

// LoadPublicKeys reads keyFile.pub.
func LoadPublicKeys(keyFile string) (PublicKeys, error) {
	path := PublicKeyFile(keyFile)
	data, err := readSmallFile(path)
	if err != nil {
		return PublicKeys{}, fmt.Errorf("load backup public keys %s: %w", path, err)
	}
	var p PublicKeys
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "recipient:"); ok {
			p.Recipient = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "signing-key:"); ok {
			p.Signer = strings.TrimSpace(v)
		}
	}
	if _, err := age.ParseX25519Recipient(p.Recipient); err != nil {
		return PublicKeys{}, fmt.Errorf("load backup public keys %s: %w: no valid \"recipient: age1...\" line", path, ErrNotKey)
	}
	if _, err := ParseSigner(p.Signer); err != nil {
		return PublicKeys{}, fmt.Errorf("load backup public keys %s: %w", path, err)
	}
	return p, nil
}

// LoadSigningKey reads keyFile.sign; like LoadKeyFile it refuses a file
// that others can read.
func LoadSigningKey(keyFile string) (*SigningKey, error) {
	path := SigningKeyFile(keyFile)
	data, err := readSecretFile(path)
	if err != nil {
		return nil, fmt.Errorf("load snapshot signing key %s: %w", path, err)
	}
	var seed []byte
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), signingKeyPrefix); ok {
			if seed != nil {
				return nil, fmt.Errorf("load snapshot signing key %s: %w: more than one key", path, ErrNotKey)
			}
			if seed, err = base64.StdEncoding.Strict().DecodeString(v); err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("load snapshot signing key %s: %w: bad key line", path, ErrNotKey)
			}
		}
	}
	if seed == nil {
		return nil, fmt.Errorf("load snapshot signing key %s: %w: no %s... line", path, ErrNotKey, signingKeyPrefix)
	}
	return &SigningKey{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadWriterKeys loads what a box needs to write snapshots: keyFile.pub
// and keyFile.sign, which must belong together. The identity keyFile is not
// read: it can live off the box.
func LoadWriterKeys(keyFile string) (PublicKeys, *SigningKey, error) {
	const hint = " (\"kubox snapshot key create\" makes it)"
	pub, err := LoadPublicKeys(keyFile)
	if err != nil {
		return PublicKeys{}, nil, fmt.Errorf("%w"+hint, err)
	}
	signer, err := LoadSigningKey(keyFile)
	if err != nil {
		return PublicKeys{}, nil, fmt.Errorf("%w"+hint, err)
	}
	if signer.Public() != pub.Signer {
		return PublicKeys{}, nil, fmt.Errorf("%w: %s names signing key %s, but %s holds %s", ErrNotKey,
			PublicKeyFile(keyFile), pub.Signer, SigningKeyFile(keyFile), signer.Public())
	}
	return pub, signer, nil
}

// signerInIdentity returns the signing public key named by an identity
// file's comment, or "".
func signerInIdentity(data []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), signerComment); ok {
			if _, err := ParseSigner(v); err != nil {
				return "", err
			}
			return v, nil
		}
	}
	return "", nil
}

// TrustedSigner returns the signing public key that snapshots read with the
// key file keyFile must be signed by: the one the identity file names
// (CreateKeyFiles writes it there), else the one in keyFile.pub beside it
// (for an identity made before snapshots were signed), else "" (then only
// unsigned snapshots of format versions 1 and 2 can be read). A missing
// identity file is not an error: an unencrypted snapshot needs none.
func TrustedSigner(keyFile string) (string, error) {
	data, err := readSecretFile(keyFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("load backup key %s: %w", keyFile, err)
	}
	if err == nil {
		s, err := signerInIdentity(data)
		if err != nil {
			return "", fmt.Errorf("load backup key %s: %w", keyFile, err)
		}
		if s != "" {
			return s, nil
		}
	}
	p, err := LoadPublicKeys(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return p.Signer, nil
}

// Trust says which snapshot signatures a reader accepts.
type Trust struct {
	// Signer is the signing public key ("ed25519:...") a snapshot must be
	// signed by.
	Signer string
	// InsecureSkipSignature accepts a snapshot that is unsigned or signed
	// by another key. Its content is then only as trustworthy as the place
	// it was kept.
	InsecureSkipSignature bool
}

// SignatureWarning returns the one line to show for a snapshot accepted
// with header h under trust: why its signature was not checked, or "" if
// it was.
func SignatureWarning(h Header, trust Trust) string {
	switch {
	case h.FormatVersion < 3:
		return fmt.Sprintf("WARNING: snapshot of format version %d, made before snapshots were signed: its origin is not checked", h.FormatVersion)
	case trust.InsecureSkipSignature:
		return "WARNING: --insecure-skip-signature: the snapshot's signature was not checked; anyone who could write the file could have made it"
	}
	return ""
}

// checkSigner decides, from the header alone, whether a snapshot can pass
// under trust, so a foreign or unsigned snapshot is refused before any
// decryption work.
func (t Trust) checkSigner(h Header) error {
	if h.FormatVersion < 3 || t.InsecureSkipSignature {
		return nil
	}
	switch {
	case h.Signer == "":
		return fmt.Errorf("%w (give --insecure-skip-signature to accept it knowingly)", ErrUnsigned)
	case t.Signer == "":
		return fmt.Errorf("%w: no trusted signing public key to check the signature (%s) against: the key file names none and there is no .pub file beside it", ErrBadSignature, h.Signer)
	case h.Signer != t.Signer:
		return fmt.Errorf("%w: signed by %s, the trusted signing key is %s", ErrBadSignature, h.Signer, t.Signer)
	}
	return nil
}

// signatureMessage is what a snapshot's signature signs: the exact header
// bytes and the body's bytes (ciphertext for an encrypted snapshot), by
// digest. The body's last entry binds the header to the plaintext; this
// binds both to the signer, so re-encrypting other content to the public
// recipient fails without the signing key.
func signatureMessage(prefix []byte, bodyDigest []byte) []byte {
	hp := blake3.Sum256(prefix)
	m := make([]byte, 0, len(sigContext)+64)
	m = append(m, sigContext...)
	m = append(m, hp[:]...)
	return append(m, bodyDigest...)
}

func (s *SigningKey) sigBlock(prefix, bodyDigest []byte) []byte {
	sig := ed25519.Sign(s.priv, signatureMessage(prefix, bodyDigest))
	return append([]byte(sigMagic), sig...)
}

// checkSigBlock verifies the signature block of a snapshot with header h.
func checkSigBlock(block []byte, h Header, prefix, bodyDigest []byte) error {
	if len(block) != sigBlockLen || string(block[:len(sigMagic)]) != sigMagic {
		return corruptf("signature block missing or damaged")
	}
	pub, err := ParseSigner(h.Signer)
	if err != nil {
		return corruptf("%v", err)
	}
	if !ed25519.Verify(pub, signatureMessage(prefix, bodyDigest), block[len(sigMagic):]) {
		return fmt.Errorf("%w: the signature does not match the snapshot's content", ErrBadSignature)
	}
	return nil
}

// readSmallFile reads a key file of at most maxKeyFileSize bytes.
func readSmallFile(path string) ([]byte, error) { return readKeyFile(path, false) }

// readSecretFile reads a key file that must be a regular file readable by
// its owner only.
func readSecretFile(path string) ([]byte, error) { return readKeyFile(path, true) }

func readKeyFile(path string, secret bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// the bytes read.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrNotKey)
	}
	if perm := fi.Mode().Perm(); secret && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: mode %#o lets other users read it; run: chmod 600 %s", ErrKeyPermissions, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrNotKey, maxKeyFileSize)
	}
	return data, nil
}
