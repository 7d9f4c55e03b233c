package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/zeebo/blake3"
)

const (
	// FormatVersion is the snapshot format version this package writes, and
	// the newest it reads. Version 2 replaced the db's SHA-256 with BLAKE3
	// (several times faster without SHA-NI, where SHA-256 was the largest CPU
	// cost of a save); version 3 added the signature (Header.Signer and the
	// signature block at the end). Versions 1 and 2 are still read.
	FormatVersion = 3

	// Extension is the file name extension of snapshot files.
	Extension = ".kbsnap"

	// EncryptionAge marks a body encrypted with age to an X25519 recipient.
	EncryptionAge = "age-x25519"
	// EncryptionNone marks a body written with InsecurePlaintext.
	EncryptionNone = "none"

	magic = "KUBOXSNAP"
	// prefixLen is the fixed part before the header JSON: magic, version
	// byte, big-endian uint32 header length.
	prefixLen = len(magic) + 1 + 4
	// maxHeaderLen bounds what a reader allocates for a header, so a damaged
	// length field cannot make it allocate gigabytes.
	maxHeaderLen = 64 << 10
	// maxFieldLen bounds the free-form header strings; a Kubernetes node name
	// is at most 253 bytes.
	maxFieldLen = 253
)

// Header describes a snapshot. It is stored in plaintext at the start of the
// file (so it can be listed without the key) and authenticated by the
// encrypted body.
type Header struct {
	FormatVersion int       `json:"format_version"`
	ClusterID     string    `json:"cluster_id"`
	NodeName      string    `json:"node_name"`
	CreatedAt     time.Time `json:"created_at"` // UTC
	EtcdRevision  int64     `json:"etcd_revision"`
	KuboxVersion  string    `json:"kubox_version"`
	// Name is the user's label ("before-upgrade"); "scheduled" or "manual"
	// when none was given.
	Name      string `json:"name"`
	Scheduled bool   `json:"scheduled"`
	// Encryption is EncryptionAge or EncryptionNone.
	Encryption string `json:"encryption"`
	// Recipient is the age public key (age1...) the body is encrypted to,
	// so a wrong key can be told apart from a damaged file and the user can
	// see which key a snapshot needs.
	Recipient  string `json:"recipient,omitempty"`
	EtcdDBSize int64  `json:"etcd_db_size"`
	// The etcd db's digest: hex BLAKE3-256 in format version 2, hex
	// SHA-256 in version 1; exactly one is set.
	EtcdDBBLAKE3 string `json:"etcd_db_blake3,omitempty"`
	EtcdDBSHA256 string `json:"etcd_db_sha256,omitempty"`
	PKISize      int64  `json:"pki_size"`  // total bytes of the PKI files
	PKIFiles     int    `json:"pki_files"` // number of PKI files
	// Signer is the ed25519 public key ("ed25519:<base64>") whose
	// signature ends the file; "" for an unsigned snapshot (always so
	// before format version 3).
	Signer string `json:"signer,omitempty"`
}

// encodePrefix renders everything before the body: magic, version, header
// length and the header JSON padded with spaces to exactly reserve bytes.
// Padding lets Write reserve the header's room before the sizes and digest
// it will hold are known.
func encodePrefix(h Header, reserve int) ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot header: %w", err)
	}
	if len(js) > reserve {
		return nil, fmt.Errorf("encode snapshot header: %d bytes do not fit the %d reserved", len(js), reserve)
	}
	if reserve > maxHeaderLen {
		return nil, fmt.Errorf("encode snapshot header: %d bytes, more than the %d allowed", reserve, maxHeaderLen)
	}
	b := make([]byte, 0, prefixLen+reserve)
	b = append(b, magic...)
	b = append(b, FormatVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(reserve))
	b = append(b, js...)
	b = append(b, bytes.Repeat([]byte{' '}, reserve-len(js))...)
	return b, nil
}

// headerReserve returns how many bytes to reserve for the header JSON: its
// length with the widest values the fields filled in after streaming can
// take. Computing it up front makes a header that could not fit fail before
// anything is streamed.
func headerReserve(h Header, pkiFiles int) (int, error) {
	h.EtcdDBSize, h.PKISize = math.MaxInt64, math.MaxInt64
	h.EtcdDBBLAKE3 = strings.Repeat("0", 64)
	h.PKIFiles = pkiFiles
	js, err := json.Marshal(h)
	if err != nil {
		return 0, fmt.Errorf("encode snapshot header: %w", err)
	}
	if len(js) > maxHeaderLen {
		return 0, fmt.Errorf("encode snapshot header: %d bytes, more than the %d allowed", len(js), maxHeaderLen)
	}
	return len(js), nil
}

// readPrefix reads and checks everything before the body, and returns those
// exact bytes (the body's last entry authenticates them) and the header.
func readPrefix(r io.Reader) ([]byte, Header, error) {
	fixed := make([]byte, prefixLen)
	n, err := io.ReadFull(r, fixed)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, Header{}, fmt.Errorf("read snapshot header: %w", err)
		}
		m := min(n, len(magic))
		if !bytes.Equal(fixed[:m], []byte(magic)[:m]) {
			return nil, Header{}, ErrNotSnapshot
		}
		if n == 0 {
			return nil, Header{}, corruptf("file is empty")
		}
		return nil, Header{}, corruptf("file ends inside the header (%d bytes)", n)
	}
	if !bytes.Equal(fixed[:len(magic)], []byte(magic)) {
		return nil, Header{}, ErrNotSnapshot
	}
	version := int(fixed[len(magic)])
	switch {
	case version > FormatVersion:
		return nil, Header{}, fmt.Errorf("%w (format version %d, this kubox reads up to %d)", ErrNewerVersion, version, FormatVersion)
	case version < 1:
		return nil, Header{}, corruptf("unknown format version %d", version)
	}
	hlen := binary.BigEndian.Uint32(fixed[len(magic)+1:])
	if hlen == 0 || hlen > maxHeaderLen {
		return nil, Header{}, corruptf("header length %d out of range", hlen)
	}
	prefix := make([]byte, prefixLen+int(hlen))
	copy(prefix, fixed)
	if _, err := io.ReadFull(r, prefix[prefixLen:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, Header{}, corruptf("file ends inside the header")
		}
		return nil, Header{}, fmt.Errorf("read snapshot header: %w", err)
	}
	var h Header
	if err := json.Unmarshal(prefix[prefixLen:], &h); err != nil {
		return nil, Header{}, corruptf("header is not valid JSON: %v", err)
	}
	if h.FormatVersion != version {
		return nil, Header{}, corruptf("header says format version %d, file says %d", h.FormatVersion, version)
	}
	if err := h.check(); err != nil {
		return nil, Header{}, corruptf("%v", err)
	}
	return prefix, h, nil
}

// check validates a decoded header: the fields a reader relies on must be
// well formed, and strings that `snapshot ls` prints must be printable.
func (h Header) check() error {
	switch h.Encryption {
	case EncryptionAge:
		if _, err := age.ParseX25519Recipient(h.Recipient); err != nil {
			return fmt.Errorf("header recipient is not an age X25519 public key")
		}
	case EncryptionNone:
		if h.Recipient != "" {
			return fmt.Errorf("unencrypted snapshot names a recipient")
		}
	default:
		return fmt.Errorf("unknown encryption %q", h.Encryption)
	}
	if h.EtcdDBSize <= 0 || h.PKISize < 0 || h.PKIFiles < 0 || h.PKIFiles > maxPKIFiles {
		return fmt.Errorf("header sizes out of range")
	}
	digest, other, field := h.EtcdDBBLAKE3, h.EtcdDBSHA256, "etcd_db_blake3"
	if h.FormatVersion == 1 {
		digest, other, field = h.EtcdDBSHA256, h.EtcdDBBLAKE3, "etcd_db_sha256"
	}
	if d, err := hex.DecodeString(digest); err != nil || len(d) != 32 || hex.EncodeToString(d) != digest {
		return fmt.Errorf("header %s is not a lowercase hex 32-byte digest", field)
	}
	if other != "" {
		return fmt.Errorf("header of format version %d has the other version's db digest", h.FormatVersion)
	}
	if h.Signer != "" {
		if h.FormatVersion < 3 {
			return fmt.Errorf("header of format version %d names a signer", h.FormatVersion)
		}
		if _, err := ParseSigner(h.Signer); err != nil {
			return fmt.Errorf("header signer is not an ed25519 public key")
		}
	}
	return h.checkStrings()
}

// dbDigest returns a hash of the kind this header's format version uses for
// the etcd db, and the hex digest the header expects of it.
func (h Header) dbDigest() (hash.Hash, string) {
	if h.FormatVersion == 1 {
		return sha256.New(), h.EtcdDBSHA256
	}
	return blake3.New(), h.EtcdDBBLAKE3
}

// checkStrings rejects header strings that are too long or would garble a
// terminal (control characters, invalid UTF-8).
func (h Header) checkStrings() error {
	for _, f := range []struct{ name, v string }{
		{"cluster_id", h.ClusterID},
		{"node_name", h.NodeName},
		{"kubox_version", h.KuboxVersion},
		{"name", h.Name},
	} {
		if len(f.v) > maxFieldLen {
			return fmt.Errorf("header %s longer than %d bytes", f.name, maxFieldLen)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("header %s is not valid UTF-8", f.name)
		}
		for _, r := range f.v {
			if !unicode.IsPrint(r) {
				return fmt.Errorf("header %s contains a non-printable character", f.name)
			}
		}
	}
	return nil
}
