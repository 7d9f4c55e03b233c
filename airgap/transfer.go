package airgap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LeaseExpiration is how long what an interrupted import wrote is kept for
// the next import of the same bundle to resume from.
const LeaseExpiration = 24 * time.Hour

// ErrPartialDiscarded is returned when a blob left half-written by an
// earlier import did not match its digest once completed: it is discarded,
// the rest of what was written is kept, and importing the bundle again
// writes that blob from its start.
var ErrPartialDiscarded = errors.New("a blob left half-written by an earlier import was corrupt and is discarded: import the bundle again")

// Transfer is how far the blobs of an import are. Present and Resumed are
// known before the first blob is read; Read and Written grow as the bundle
// streams in.
type Transfer struct {
	Total   int64 // every blob of the bundle
	Read    int64 // of Total, read from the bundle so far
	Present int64 // in containerd before the import: read and checked, not written
	Resumed int64 // written by an interrupted earlier import: not written again
	Written int64 // written into containerd by this import
	Elapsed time.Duration
	// Unpacking is the image being unpacked, once every blob is in.
	Unpacking string
}

// Skipped is what the import does not write because containerd has it.
func (t Transfer) Skipped() int64 { return t.Present + t.Resumed }

// MBps is the rate at which the bundle is read, in MB/s (10^6 bytes).
func (t Transfer) MBps() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Read) / 1e6 / t.Elapsed.Seconds()
}

// Percent is how much of the bundle was read.
func (t Transfer) Percent() float64 {
	if t.Total <= 0 {
		return 100
	}
	return 100 * float64(t.Read) / float64(t.Total)
}

// MB formats a size in MB (10^6 bytes), as kubox's progress lines do.
func MB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// ingestRef names the ingest of a blob: the same for every import, so that
// one import resumes what an interrupted one wrote.
func ingestRef(d digest.Digest) string { return "kubox-airgap-" + d.Encoded() }

// planTransfer looks up every blob of m in cs: committed, or written in
// part by an earlier import.
func planTransfer(ctx context.Context, cs content.Store, m *Manifest) (Transfer, error) {
	t := Transfer{Total: m.Size()}
	for _, b := range m.Blobs {
		_, err := cs.Info(ctx, b.Digest)
		if err == nil {
			t.Present += b.Size
			continue
		}
		if !errdefs.IsNotFound(err) {
			return t, fmt.Errorf("look up blob %s in containerd: %w", b.Digest, err)
		}
		st, err := cs.Status(ctx, ingestRef(b.Digest))
		if err == nil && st.Offset > 0 && st.Offset <= b.Size {
			t.Resumed += st.Offset
		}
	}
	return t, nil
}

// copyBlobs writes the bundle's blobs into cs, skipping those it has and
// continuing those written in part, and fills in tr. It returns, per image,
// the time spent on its blobs and their size (a blob counts for the first
// image that uses it).
func copyBlobs(ctx context.Context, cs content.Store, br *Reader, tr *Transfer, opts ImportOptions) ([]time.Duration, []int64, error) {
	n := len(br.Manifest().Images)
	took, size := make([]time.Duration, n), make([]int64, n)
	every := opts.ReportEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	begin := time.Now()
	last := begin
	report := func() {
		tr.Elapsed = time.Since(begin)
		if opts.Report != nil {
			opts.Report(*tr)
		}
	}
	tick := func() error {
		if opts.writeRate > 0 {
			due := time.Duration(float64(tr.Written)/float64(opts.writeRate)*float64(time.Second)) - time.Since(begin)
			if err := sleep(ctx, due); err != nil {
				return err
			}
		}
		if now := time.Now(); now.Sub(last) >= every {
			last = now
			report()
		}
		return nil
	}
	// Counted again as they come: another import may have committed some
	// blobs since planTransfer looked.
	tr.Present, tr.Resumed = 0, 0
	for {
		bl, blr, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return took, size, err
		}
		t := time.Now()
		if err := writeBlob(ctx, cs, br, bl, &meter{ctx: ctx, r: blr, tr: tr, tick: tick}); err != nil {
			return took, size, err
		}
		if i, ok := br.Owner(bl.Digest); ok {
			took[i] += time.Since(t)
			size[i] += bl.Size
		}
	}
	tr.Elapsed = time.Since(begin)
	if last != begin && opts.Report != nil {
		// A long import's last line: 100%. A short one has only its
		// result.
		opts.Report(*tr)
	}
	return took, size, nil
}

// writeBlob writes one blob from m into cs: not at all if cs has it, from
// where an earlier import stopped if it wrote part of it.
func writeBlob(ctx context.Context, cs content.Store, br *Reader, bl Blob, m *meter) error {
	ref := ingestRef(bl.Digest)
	cw, err := content.OpenWriter(ctx, cs, content.WithRef(ref), content.WithDescriptor(bl.desc()))
	if errdefs.IsAlreadyExists(err) {
		// Not read by containerd: the reader checks it, so the bundle
		// is verified whole.
		m.tr.Present += bl.Size
		m.from = bl.Size
		_, err := io.Copy(io.Discard, m)
		return err
	}
	if err != nil {
		return fmt.Errorf("write blob %s into containerd: %w", bl.Digest, err)
	}
	defer cw.Close()
	st, err := cw.Status()
	if err != nil {
		return fmt.Errorf("write blob %s into containerd: %w", bl.Digest, err)
	}
	m.from = st.Offset
	m.tr.Resumed += st.Offset
	// containerd's content store checks the digest on commit, the part
	// an earlier import wrote included (it hashes it again from disk), so
	// the reader need not hash the blob too. content.Copy reads past the
	// part already written.
	br.leaveDigest()
	err = content.Copy(ctx, cw, m, bl.Size, bl.Digest)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// Stopped: the part written is kept for the next import.
		return fmt.Errorf("write blob %s into containerd: %w", bl.Digest, ctx.Err())
	}
	// What was written of this blob is not to be resumed.
	if aerr := cs.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errdefs.IsNotFound(aerr) {
		err = fmt.Errorf("%w (and discarding it: %v)", err, aerr)
	}
	// The reader's own error says best what was wrong.
	if _, rerr := io.Copy(io.Discard, m); rerr != nil {
		return rerr
	}
	if errdefs.IsFailedPrecondition(err) {
		if st.Offset > 0 {
			// The bundle or the part written before: importing again
			// from the blob's start tells which.
			return fmt.Errorf("blob %s: %w", bl.Digest, ErrPartialDiscarded)
		}
		return fmt.Errorf("%w: blob %s (containerd found other content): %v", ErrDigestMismatch, bl.Digest, err)
	}
	return fmt.Errorf("write blob %s into containerd: %w", bl.Digest, err)
}

func (b Blob) desc() ocispec.Descriptor { return ocispec.Descriptor{Digest: b.Digest, Size: b.Size} }

// meter counts what is read of one blob into a Transfer: every byte as
// read, those from the offset the writing starts at as written.
type meter struct {
	// ctx stops the reading: a blob containerd has is only read, with no
	// call to containerd that would see a cancellation.
	ctx  context.Context
	r    io.Reader
	tr   *Transfer
	pos  int64 // of the blob, read so far
	from int64 // where writing starts: bytes before it are not written
	tick func() error
}

func (m *meter) Read(p []byte) (int, error) {
	if err := m.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := m.r.Read(p)
	if n > 0 {
		end := m.pos + int64(n)
		if w := end - max(m.pos, m.from); w > 0 {
			m.tr.Written += w
		}
		m.pos = end
		m.tr.Read += int64(n)
		if terr := m.tick(); terr != nil {
			return n, terr
		}
	}
	return n, err
}

// sleep waits for d, or for ctx to end.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// releaseLeases deletes the leases of every import of bundle id (this one
// and interrupted ones); at once (sync) when the import failed, so that
// nothing of a refused bundle remains.
func releaseLeases(ctx context.Context, ls leases.Manager, id digest.Digest, sync bool) error {
	list, err := ls.List(ctx, fmt.Sprintf("labels.%q==%s", BundleLabel, id.Encoded()))
	if err != nil {
		return fmt.Errorf("list containerd leases: %w", err)
	}
	var opts []leases.DeleteOpt
	if sync {
		opts = append(opts, leases.SynchronousDelete)
	}
	var errs []error
	for _, l := range list {
		if err := ls.Delete(ctx, l, opts...); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("release containerd lease %s: %w", l.ID, err))
		}
	}
	return errors.Join(errs...)
}
