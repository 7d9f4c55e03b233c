package airgap

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// bigBundle is a bundle of one image with three random layers of about
// 2 MiB: large enough that a layer is read in several pieces.
func bigBundle(t *testing.T) []byte {
	t.Helper()
	img, err := random.Image(2<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	return writeBundle(t, []Source{{Name: "localhost/test/big:1", Image: withPlatform(t, img)}}, nil)
}

// copyAll runs copyBlobs over data into cs; stopAt, if > 0, cancels the
// run once that many bytes were read.
func copyAll(t *testing.T, cs content.Store, data []byte, stopAt int64) (Transfer, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	br, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	tr, err := planTransfer(ctx, cs, br.Manifest())
	if err != nil {
		t.Fatal(err)
	}
	planned := tr
	opts := ImportOptions{ReportEvery: time.Nanosecond, Report: func(p Transfer) {
		if stopAt > 0 && p.Read >= stopAt {
			cancel()
		}
	}}
	_, _, err = copyBlobs(ctx, cs, br, &tr, opts)
	if err == nil && (tr.Present != planned.Present || tr.Resumed != planned.Resumed) {
		t.Errorf("planned present %d resumed %d, found %d and %d", planned.Present, planned.Resumed, tr.Present, tr.Resumed)
	}
	return tr, err
}

// An import stopped in the middle of a blob resumes: the blobs committed
// are not written again, the one written in part is continued, and every
// blob ends up in the store with its digest.
func TestCopyBlobsResumes(t *testing.T) {
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bigBundle(t)
	man := mustManifest(t, data)
	total := man.Size()

	first, err := copyAll(t, cs, data, total*6/10)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped copy: err %v, want context.Canceled", err)
	}
	if first.Written == 0 || first.Written >= total {
		t.Fatalf("stopped copy wrote %d of %d", first.Written, total)
	}

	second, err := copyAll(t, cs, data, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run wrote %d, second: present %d resumed %d written %d, of %d", first.Written, second.Present, second.Resumed, second.Written, total)
	if second.Resumed == 0 {
		t.Errorf("the blob written in part was not resumed")
	}
	if second.Present+second.Resumed != first.Written {
		t.Errorf("second run skipped %d+%d bytes, the first wrote %d", second.Present, second.Resumed, first.Written)
	}
	if second.Written != total-first.Written || second.Read != total {
		t.Errorf("second run wrote %d and read %d, want %d and %d", second.Written, second.Read, total-first.Written, total)
	}
	for _, b := range man.Blobs {
		checkStored(t, cs, b)
	}

	third, err := copyAll(t, cs, data, 0)
	if err != nil || third.Written != 0 || third.Present != total {
		t.Errorf("third run: err %v, written %d, present %d (want 0 and %d)", err, third.Written, third.Present, total)
	}
}

// A blob left half-written with other content than its digest's is
// discarded when found, and the next run writes it whole.
func TestCopyBlobsCorruptPartial(t *testing.T) {
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bigBundle(t)
	man := mustManifest(t, data)
	var big Blob
	for _, b := range man.Blobs {
		if b.Size > big.Size {
			big = b
		}
	}
	ctx := context.Background()
	w, err := content.OpenWriter(ctx, cs, content.WithRef(ingestRef(big.Digest)), content.WithDescriptor(big.desc()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.Repeat([]byte{'x'}, 1000)); err != nil {
		t.Fatal(err)
	}
	w.Close()

	if _, err := copyAll(t, cs, data, 0); !errors.Is(err, ErrPartialDiscarded) {
		t.Fatalf("err %v, want ErrPartialDiscarded", err)
	}
	if _, err := cs.Status(ctx, ingestRef(big.Digest)); !errdefs.IsNotFound(err) {
		t.Errorf("the corrupt part is still there: %v", err)
	}
	tr, err := copyAll(t, cs, data, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The blobs before the bad one were committed by the first run.
	if tr.Resumed != 0 || tr.Written < big.Size || tr.Written+tr.Present != man.Size() {
		t.Errorf("second run resumed %d, wrote %d, found %d present; want 0, the blob's %d at least, %d in all", tr.Resumed, tr.Written, tr.Present, big.Size, man.Size())
	}
	checkStored(t, cs, big)
}

// A bundle blob whose content does not match its digest is refused, and
// nothing of it is left to resume.
func TestCopyBlobsMismatch(t *testing.T) {
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ents := untar(t, bigBundle(t))
	bi := blobIndex(ents)
	ents[bi].data[len(ents[bi].data)/2] ^= 0xff
	d := digest.NewDigestFromEncoded(digest.SHA256, ents[bi].name[len(blobsPrefix):])
	if _, err := copyAll(t, cs, retar(t, ents), 0); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err %v, want ErrDigestMismatch", err)
	}
	if _, err := cs.Status(context.Background(), ingestRef(d)); !errdefs.IsNotFound(err) {
		t.Errorf("the bad blob's ingest is left: %v", err)
	}
	if _, err := cs.Info(context.Background(), d); !errdefs.IsNotFound(err) {
		t.Errorf("the bad blob was committed: %v", err)
	}
}

func mustManifest(t *testing.T, data []byte) *Manifest {
	t.Helper()
	br, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	return br.Manifest()
}

func checkStored(t *testing.T, cs content.Store, b Blob) {
	t.Helper()
	got, err := content.ReadBlob(context.Background(), cs, b.desc())
	if err != nil {
		t.Errorf("blob %s: %v", b.Digest, err)
		return
	}
	if d := digest.FromBytes(got); d != b.Digest {
		t.Errorf("blob %s holds content %s", b.Digest, d)
	}
}
