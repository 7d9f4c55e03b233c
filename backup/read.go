package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// maxZstdWindow bounds the decoder's memory whatever a (possibly hostile,
// when unencrypted) frame asks for; Write's encoder uses at most 8 MiB.
const maxZstdWindow = 32 << 20

// sink receives a snapshot's content while it streams by. Nothing it gets
// may be trusted, or made visible, before readSnapshot has returned nil.
type sink interface {
	// pkiFile gets one PKI file; name has passed checkPKIName.
	pkiFile(name string, mode fs.FileMode, r io.Reader) error
	// dbPart gets the parts of the etcd db, in order.
	dbPart(r io.Reader) error
}

// discard is the sink of Verify: reading is the check.
type discard struct{}

func (discard) pkiFile(_ string, _ fs.FileMode, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (discard) dbPart(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// readSnapshot reads a whole snapshot from r, hands its content to s, and
// checks everything: the header, the key, age's authentication, the archive
// structure and end, the end of every stream, and the sizes and digests.
// A nil key accepts only unencrypted snapshots, a non-nil key only encrypted
// ones.
func readSnapshot(r io.Reader, key *Key, s sink) (Header, error) {
	src := &trackingReader{r: r}
	prefix, h, err := readPrefix(src)
	if err != nil {
		return Header{}, err
	}
	body, err := openBody(src, h, key)
	if err != nil {
		return Header{}, classify(err, src)
	}
	zr, err := zstd.NewReader(body,
		// Two: decoding runs beside hashing and the sink (about 20% faster
		// than synchronous on 2 cores), whatever the host's core count.
		zstd.WithDecoderConcurrency(2),
		zstd.WithDecoderMaxWindow(maxZstdWindow),
		zstd.WithDecoderMaxMemory(maxZstdWindow))
	if err != nil {
		return Header{}, fmt.Errorf("start decompression: %w", err)
	}
	defer zr.Close()
	if err := readArchive(zr, prefix, h, s); err != nil {
		return Header{}, classify(err, src)
	}
	// The archive has ended; the zstd stream and the body must end with it.
	if n, err := io.Copy(io.Discard, zr); err != nil {
		return Header{}, classify(err, src)
	} else if n > 0 {
		return Header{}, corruptf("data after the end of the archive")
	}
	if n, err := io.Copy(io.Discard, body); err != nil {
		return Header{}, classify(err, src)
	} else if n > 0 {
		return Header{}, corruptf("data after the end of the compressed stream")
	}
	return h, nil
}

// openBody returns the decrypted body, after matching the key to the file.
func openBody(r io.Reader, h Header, key *Key) (io.Reader, error) {
	if h.Encryption == EncryptionNone {
		if key != nil {
			return nil, fmt.Errorf("%w: it was written with insecure plaintext; read it without a key to accept it", ErrUnencrypted)
		}
		return r, nil
	}
	if key == nil {
		return nil, fmt.Errorf("%w: the snapshot is encrypted to %s", ErrKeyRequired, h.Recipient)
	}
	body, err := age.Decrypt(r, key.identity)
	var noMatch *age.NoIdentityMatchError
	if errors.As(err, &noMatch) {
		if h.Recipient != key.Recipient() {
			return nil, fmt.Errorf("%w: the snapshot is encrypted to %s, the key given is %s", ErrWrongKey, h.Recipient, key.Recipient())
		}
		// The header names this key, yet age's recipient stanza does not
		// open with it: the stanza (or the header) was damaged.
		return nil, corruptf("the encryption header does not open with the key the snapshot names")
	}
	if err != nil {
		return nil, err
	}
	return body, nil
}

// classify turns an error met while reading the body into a one-line error
// of the right kind: an I/O error of the file as itself, a sink's own error
// as itself, anything else (age, zstd or tar refusing the data) as
// ErrCorrupted.
func classify(err error, src *trackingReader) error {
	var se *sinkError
	switch {
	case src.err != nil:
		return src.err
	case errors.As(err, &se):
		return se.err
	case errors.Is(err, ErrCorrupted), errors.Is(err, ErrDigestMismatch), errors.Is(err, ErrWrongKey),
		errors.Is(err, ErrKeyRequired), errors.Is(err, ErrUnencrypted):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return corruptf("file ends too early")
	default:
		return corruptf("%v", err)
	}
}

type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

// trackingReader remembers the first real read error of the file, so that
// an I/O error is reported as such and not as a damaged snapshot.
type trackingReader struct {
	r   io.Reader
	err error
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
