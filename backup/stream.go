package backup

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Sink receives a snapshot that WriteTo streams to a destination that
// cannot seek, such as an object store's multipart upload. The snapshot's
// bytes are the header (given to Commit, and HeaderLen long as Open was
// told), then the body (given to Write, in order), then the trailer (the
// signature block, or nothing, given to Commit).
type Sink interface {
	io.Writer
	// Commit makes the whole snapshot visible under its final name, all at
	// once; before it returns nil nothing of it may look complete.
	Commit(ctx context.Context, header, trailer []byte) (Entry, error)
	// Abort throws away what was written. WriteTo calls it on any failure
	// before Commit succeeded.
	Abort()
}

// OpenSink starts a snapshot destination for header h (name, node and time
// are final; sizes and digests are not known yet) whose header bytes will be
// headerLen long.
type OpenSink func(ctx context.Context, h Header, headerLen int) (Sink, error)

// WriteTo is Write for a destination that cannot seek: it streams the
// snapshot's body into the sink that open returns and hands it the header
// and signature block at the end. Memory stays bounded as in Write; the
// sink decides how much it buffers.
func WriteTo(ctx context.Context, db io.Reader, opts WriteOptions, open OpenSink) (Entry, error) {
	h, recipient, err := newHeader(opts)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	pki, err := sortedPKI(opts.PKIFiles)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	reserve, err := headerReserve(h, len(pki))
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	sink, err := open(ctx, h, prefixLen+reserve)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			sink.Abort()
		}
	}()
	_, bodyDigest, err := writeBody(ctx, sink, prefixLen+reserve, db, pki, recipient, &h)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	prefix, err := encodePrefix(h, reserve)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	var trailer []byte
	if opts.Signer != nil {
		trailer = opts.Signer.sigBlock(prefix, bodyDigest)
	}
	// A cancelled save never commits, even if the stream ended first.
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	e, err := sink.Commit(ctx, prefix, trailer)
	if err != nil {
		return Entry{}, fmt.Errorf("write snapshot: %w", err)
	}
	committed = true
	e.Header = h
	return e, nil
}

// ObjectName is the name a snapshot with header h gets in a snapshot dir or
// an object store: <name>-<node>-<UTC time>.kbsnap.
func ObjectName(h Header) string { return baseName(h) + Extension }

// ParseHeader reads the plaintext header at the start of a snapshot stream
// (see ReadHeader: it proves nothing).
func ParseHeader(r io.Reader) (Header, error) {
	_, h, err := readPrefix(r)
	if err != nil {
		return Header{}, fmt.Errorf("read snapshot header: %w", err)
	}
	return h, nil
}

// MaxPrefixLen is the most bytes a snapshot's header can take: reading that
// many from the start is always enough for ParseHeader.
const MaxPrefixLen = prefixLen + maxHeaderLen

// VerifyReader is Verify for a snapshot read from a stream (an object
// store); name says which in errors.
func VerifyReader(r io.Reader, name string, key *Key, trust Trust) (Header, error) {
	h, err := readSnapshot(r, key, trust, discard{})
	if err != nil {
		return Header{}, fmt.Errorf("verify snapshot %s: %w", name, err)
	}
	return h, nil
}

// Source opens a snapshot that is not a local file (an object store's);
// each call reads it anew from the start. Name is how messages show it.
type Source struct {
	Name string
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// extractSource is Extract for a Source: it streams the snapshot again and
// extracts it as Extract does (all or nothing).
func extractSource(ctx context.Context, src *Source, key *Key, trust Trust, targetDir string) (Header, error) {
	target := filepath.Clean(targetDir)
	if err := checkTarget(target); err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", src.Name, err)
	}
	rc, err := src.Open(ctx)
	if err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", src.Name, err)
	}
	defer rc.Close()
	return extractFrom(rc, src.Name, key, trust, target)
}

// verifySource verifies a Source by streaming it, writing nothing.
func verifySource(ctx context.Context, src *Source, key *Key, trust Trust) (Header, error) {
	rc, err := src.Open(ctx)
	if err != nil {
		return Header{}, fmt.Errorf("verify snapshot %s: %w", src.Name, err)
	}
	defer rc.Close()
	return VerifyReader(rc, src.Name, key, trust)
}

// RateReader counts what goes through it and calls report about once a
// second with the bytes so far and the rate since the start.
type RateReader struct {
	R      io.Reader
	Report func(n int64, rate float64)
	n      atomic.Int64
	start  time.Time
	last   time.Time
}

func (r *RateReader) Read(p []byte) (int, error) {
	now := time.Now()
	if r.start.IsZero() {
		r.start, r.last = now, now
	}
	n, err := r.R.Read(p)
	total := r.n.Add(int64(n))
	if r.Report != nil && (now.Sub(r.last) >= time.Second || err == io.EOF) {
		r.last = now
		r.Report(total, Rate(total, now.Sub(r.start)))
	}
	return n, err
}

// N is the number of bytes read so far.
func (r *RateReader) N() int64 { return r.n.Load() }

// Rate is n bytes over d, per second.
func Rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// verifyOpts and extractOpts read the snapshot of a restore from its file
// or its Source.
func verifyOpts(opts RestoreOptions) (Header, error) {
	if opts.Source != nil {
		return verifySource(context.Background(), opts.Source, opts.Key, opts.Trust)
	}
	return Verify(opts.Snapshot, opts.Key, opts.Trust)
}

func extractOpts(opts RestoreOptions, staging string) (Header, error) {
	if opts.Source != nil {
		return extractSource(context.Background(), opts.Source, opts.Key, opts.Trust, staging)
	}
	return Extract(opts.Snapshot, opts.Key, opts.Trust, staging)
}
