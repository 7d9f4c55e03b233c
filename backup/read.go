package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
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
// ones. A snapshot's signer is checked against trust before its content is
// read, and its signature last, once the whole body has gone by.
func readSnapshot(r io.Reader, key *Key, trust Trust, s sink) (Header, error) {
	src := &trackingReader{r: r}
	prefix, h, err := readPrefix(src)
	if err != nil {
		return Header{}, err
	}
	// The body is everything up to the signature block, if there is one;
	// the signature covers its digest.
	var raw io.Reader = src
	var tail *tailReader
	if h.Signer != "" {
		tail = newTailReader(src, sigBlockLen)
		raw = tail
	}
	body, err := openBody(raw, h, key)
	if err != nil {
		return Header{}, classify(err, src)
	}
	// After the key check (a wrong key says so first), before any of the
	// content is read.
	if err := trust.checkSigner(h); err != nil {
		return Header{}, err
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
	if tail != nil && !trust.InsecureSkipSignature {
		if err := checkSigBlock(tail.tail(), h, prefix, tail.digest.Sum(nil)); err != nil {
			return Header{}, err
		}
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
		errors.Is(err, ErrKeyRequired), errors.Is(err, ErrUnencrypted), errors.Is(err, ErrBadSignature):
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

// tailReader passes on all of r but its last n bytes, which it keeps for
// tail (the signature block), and hashes what it passes on. It never needs
// the size of r, so it works on any stream.
type tailReader struct {
	r      io.Reader
	n      int
	buf    []byte // buf[off:] was read from r and not passed on yet
	off    int
	eof    bool
	digest hash.Hash
}

func newTailReader(r io.Reader, n int) *tailReader {
	return &tailReader{r: r, n: n, buf: make([]byte, 0, 64<<10), digest: blake3.New()}
}

func (t *tailReader) Read(p []byte) (int, error) {
	// Fill until more than n bytes are held (so some can be passed on), or r ends.
	for len(t.buf)-t.off <= t.n && !t.eof {
		if err := t.fill(); err != nil {
			return 0, err
		}
	}
	avail := len(t.buf) - t.off - t.n
	if avail <= 0 {
		return 0, io.EOF
	}
	k := copy(p, t.buf[t.off:t.off+avail])
	t.digest.Write(p[:k])
	t.off += k
	return k, nil
}

func (t *tailReader) fill() error {
	if len(t.buf) == cap(t.buf) {
		// Only the held-back bytes (at most n) and what Read has not
		// taken remain; move them to the front.
		t.buf = t.buf[:copy(t.buf, t.buf[t.off:])]
		t.off = 0
	}
	m, err := t.r.Read(t.buf[len(t.buf):cap(t.buf)])
	t.buf = t.buf[:len(t.buf)+m]
	if errors.Is(err, io.EOF) {
		t.eof = true
		return nil
	}
	return err
}

// tail returns the held-back bytes (the last n bytes of r, or fewer if r
// was shorter) once Read has returned io.EOF, else nil.
func (t *tailReader) tail() []byte {
	if !t.eof || len(t.buf)-t.off > t.n {
		return nil
	}
	return t.buf[t.off:]
}
