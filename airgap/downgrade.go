package airgap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrDowngrade is returned when an import would move a tag back to an
// image from an older bundle than the one the tag's image came from.
var ErrDowngrade = errors.New("the bundle is older than what the node has")

// Downgrade is a tag an import moves from the image of one bundle to
// another image from a bundle created earlier. "Older" is the manifest's
// created time, which the signature covers; images imported before kubox
// labelled them with it (CreatedLabel), or not from a bundle, are never
// downgrades.
type Downgrade struct {
	Name         string
	From, To     digest.Digest
	Had, Created time.Time // the tag's bundle's created time; this bundle's
}

func (d Downgrade) String() string {
	return fmt.Sprintf("%s from %s (bundle created %s) back to %s (bundle created %s)",
		d.Name, d.From, d.Had.Format(time.RFC3339), d.To, d.Created.Format(time.RFC3339))
}

// Downgrades lists the tags importing m (with its OCI index idx) would move
// to an older image.
func Downgrades(ctx context.Context, is images.Store, m *Manifest, idx *ocispec.Index) ([]Downgrade, error) {
	var out []Downgrade
	for i, im := range m.Images {
		prev, err := is.Get(ctx, im.Name)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up image %s: %w", im.Name, err)
		}
		to := idx.Manifests[i].Digest
		had, err := time.Parse(time.RFC3339, prev.Labels[CreatedLabel])
		if err != nil || prev.Target.Digest == to || !m.Created.Before(had) {
			continue
		}
		out = append(out, Downgrade{Name: im.Name, From: prev.Target.Digest, To: to, Had: had, Created: m.Created})
	}
	return out, nil
}

func downgradeError(ds []Downgrade) error {
	more := ""
	if len(ds) > 1 {
		more = fmt.Sprintf(" (and %d more images)", len(ds)-1)
	}
	return fmt.Errorf("%w: it would move %s%s; to do that on purpose, import it with \"kubox airgap import --allow-downgrade\"", ErrDowngrade, ds[0], more)
}

func createdValue(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
