package airgap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
)

// Namespace is the containerd namespace of the CRI plugin, where the
// kubelet's images live.
const Namespace = "k8s.io"

// ImportOptions tune Import.
type ImportOptions struct {
	Signature SignaturePolicy
	// Snapshotter images are unpacked into; default overlayfs.
	Snapshotter string
	// Skip is asked, once the manifest is read and the signature checked,
	// whether the bundle is already there; true ends the import early.
	Skip func(id digest.Digest, m *Manifest) bool
	// Progress is called after each image is imported.
	Progress func(ImageProgress)
	// Begin is called once it is known what the import writes: before
	// the first blob, with what containerd already has.
	Begin func(*Manifest, Transfer)
	// Report is called every ReportEvery (default 10s) while the blobs
	// stream in.
	Report      func(Transfer)
	ReportEvery time.Duration
	// writeRate caps the bytes written a second (0: no cap): a test's
	// slow import.
	writeRate int64
	// AllowDowngrade lets the import move a tag to the image of an older
	// bundle (see Downgrade), or an application to an older bundle's
	// manifests; without it such an import is refused.
	AllowDowngrade bool
	// AppsDir is where a bundle's application is installed (see
	// InstallApp, AppsDir); a bundle that carries one is refused without it.
	AppsDir string
}

// Result is what an import did.
type Result struct {
	ID       digest.Digest
	Manifest *Manifest
	Skipped  bool
	Signed   bool // the bundle carries a signature
	Verified bool // ... and it was checked against the trusted key
	// Downgrades are the tags the import moved back to an older image
	// (only with AllowDowngrade).
	Downgrades []Downgrade
	// App is what installing the bundle's application changed (App.App
	// is "" for a bundle of images only).
	App AppChange
	// Bytes is the size of every blob of the bundle; Transfer says how
	// much of it this import wrote.
	Bytes    int64
	Transfer Transfer
	Took     time.Duration
}

// MBps is the import's rate in MB/s (10^6 bytes).
func (r *Result) MBps() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Took.Seconds()
}

// Import reads a bundle from r into containerd's k8s.io namespace: every
// blob is written to the content store, which commits it only if it has the
// digest the bundle names (a blob containerd already has is hashed by the
// reader instead), each image is unpacked, and only
// once all of that has worked are the images created, labelled pinned and
// with the bundle's ID. When the bundle is refused nothing of it remains:
// the blobs and snapshots written so far belong to leases that are deleted,
// and images already created or updated by this import are rolled back.
// When the import is stopped (ctx cancelled, or the process killed), what
// it wrote stays for LeaseExpiration, and the next import of the same
// bundle resumes: blobs already committed are not written again, and a
// blob written in part is continued where it stopped.
func Import(ctx context.Context, client *containerd.Client, r io.Reader, opts ImportOptions) (res *Result, err error) {
	begin := time.Now()
	if opts.Snapshotter == "" {
		opts.Snapshotter = "overlayfs"
	}
	br, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	res = &Result{ID: br.ID(), Manifest: br.Manifest()}
	res.Signed, _ = br.Signed()
	if res.Verified, err = opts.Signature.Check(br); err != nil {
		return res, err
	}
	if opts.Skip != nil && opts.Skip(res.ID, res.Manifest) {
		res.Skipped = true
		res.Took = time.Since(begin)
		return res, nil
	}

	if res.Manifest.App != "" {
		if opts.AppsDir == "" {
			return res, fmt.Errorf("the bundle carries application %s, and this import has nowhere to install it", res.Manifest.App)
		}
		if err := CheckAppDowngrade(opts.AppsDir, res.ID, res.Manifest); err != nil && !opts.AllowDowngrade {
			return res, err
		}
	}
	ctx = namespaces.WithNamespace(ctx, Namespace)
	if res.Downgrades, err = Downgrades(ctx, client.ImageService(), res.Manifest, br.Index()); err != nil {
		return res, err
	}
	if len(res.Downgrades) > 0 && !opts.AllowDowngrade {
		return res, downgradeError(res.Downgrades)
	}
	ls := client.LeasesService()
	// Labelled with the bundle, so that an import that resumes this one
	// finds and, once done, releases it.
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(LeaseExpiration),
		leases.WithLabel(BundleLabel, res.ID.Encoded()))
	if err != nil {
		return res, fmt.Errorf("create containerd lease: %w", err)
	}
	ctx = leases.WithLease(ctx, lease.ID)
	defer func() {
		if err != nil && (ctx.Err() != nil || errors.Is(err, ErrPartialDiscarded)) {
			// Stopped, not refused: what was written stays, held by the
			// lease until it expires, and the next import of this
			// bundle resumes from it.
			return
		}
		// Not ctx: a cancelled import must still clean up.
		dctx := namespaces.WithNamespace(context.WithoutCancel(ctx), Namespace)
		if derr := releaseLeases(dctx, ls, res.ID, err != nil); derr != nil && err == nil {
			err = derr
		}
	}()

	cs := client.ContentStore()
	tr, err := planTransfer(ctx, cs, res.Manifest)
	if err != nil {
		return res, err
	}
	if opts.Begin != nil {
		opts.Begin(res.Manifest, tr)
	}
	res.Bytes = tr.Total
	took, newBytes, err := copyBlobs(ctx, cs, br, &tr, opts)
	res.Transfer = tr
	if err != nil {
		return res, err
	}

	// Everything is in and verified. Make the content reachable from each
	// image (GC labels), then unpack, all still under the lease.
	var imgs []images.Image
	for i, im := range res.Manifest.Images {
		t := time.Now()
		target := br.Index().Manifests[i]
		if err := images.Walk(ctx, images.SetChildrenLabels(cs, images.ChildrenHandler(cs)), target); err != nil {
			return res, fmt.Errorf("image %s: %w", im.Name, err)
		}
		img := images.Image{
			Name:   im.Name,
			Target: target,
			Labels: map[string]string{PinnedLabel: PinnedValue, BundleLabel: res.ID.String(), CreatedLabel: createdValue(res.Manifest.Created)},
		}
		if opts.Report != nil {
			tr.Unpacking = im.Name
			opts.Report(tr)
		}
		cimg := containerd.NewImageWithPlatform(client, img, platforms.Default())
		if err := cimg.Unpack(ctx, opts.Snapshotter); err != nil {
			if errdefs.IsNotFound(err) {
				return res, fmt.Errorf("image %s (%s) cannot be unpacked on this node (%s): %w", im.Name, im.Platform, platforms.DefaultString(), err)
			}
			return res, fmt.Errorf("unpack image %s: %w", im.Name, err)
		}
		took[i] += time.Since(t)
		imgs = append(imgs, img)
	}
	if err := createImages(ctx, client.ImageService(), imgs); err != nil {
		return res, err
	}
	// After the images: pods that use them with imagePullPolicy Never
	// find them when the applier creates them.
	if res.Manifest.App != "" {
		if res.App, err = InstallApp(opts.AppsDir, res.ID, res.Manifest, br.App()); err != nil {
			return res, err
		}
	}
	res.Took = time.Since(begin)
	if opts.Progress != nil {
		for i, im := range res.Manifest.Images {
			opts.Progress(ImageProgress{Name: im.Name, Digest: im.Digest, Size: im.Size, New: newBytes[i], Took: took[i]})
		}
	}
	return res, nil
}

// createImages creates (or retargets) the images; on failure it undoes what
// it did, so a bundle's images appear all together or not at all.
func createImages(ctx context.Context, is images.Store, imgs []images.Image) error {
	type undo struct {
		created bool
		prev    images.Image
	}
	var done []undo
	rollback := func() {
		rctx := context.WithoutCancel(ctx)
		for i := len(done) - 1; i >= 0; i-- {
			if done[i].created {
				_ = is.Delete(rctx, done[i].prev.Name)
			} else {
				_, _ = is.Update(rctx, done[i].prev)
			}
		}
	}
	for _, img := range imgs {
		prev, err := is.Get(ctx, img.Name)
		switch {
		case err == nil:
			upd := prev
			upd.Target = img.Target
			if upd.Labels == nil {
				upd.Labels = map[string]string{}
			}
			for k, v := range img.Labels {
				upd.Labels[k] = v
			}
			if _, err := is.Update(ctx, upd, "target", "labels."+PinnedLabel, "labels."+BundleLabel, "labels."+CreatedLabel); err != nil {
				rollback()
				return fmt.Errorf("update image %s: %w", img.Name, err)
			}
			done = append(done, undo{prev: prev})
		case errdefs.IsNotFound(err):
			if _, err := is.Create(ctx, img); err != nil {
				rollback()
				return fmt.Errorf("create image %s: %w", img.Name, err)
			}
			done = append(done, undo{created: true, prev: img})
		default:
			rollback()
			return fmt.Errorf("look up image %s: %w", img.Name, err)
		}
	}
	return nil
}

// ImagesPresent tells whether every image of m is in containerd under its
// name (whatever its target now is: a later bundle may have updated it).
func ImagesPresent(ctx context.Context, is images.Store, names []string) (bool, error) {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	list, err := is.List(ctx)
	if err != nil {
		return false, fmt.Errorf("list images: %w", err)
	}
	have := make(map[string]bool, len(list))
	for _, i := range list {
		have[i.Name] = true
	}
	for _, n := range names {
		if !have[n] {
			return false, nil
		}
	}
	return true, nil
}
