package airgap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imageStore is the part of containerd's image store Downgrades reads.
type imageStore struct {
	images.Store
	m map[string]images.Image
}

func (s imageStore) Get(_ context.Context, name string) (images.Image, error) {
	if im, ok := s.m[name]; ok {
		return im, nil
	}
	return images.Image{}, errdefs.ErrNotFound
}

func TestDowngrades(t *testing.T) {
	d := func(s string) digest.Digest { return digest.FromString(s) }
	jan, feb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	store := imageStore{m: map[string]images.Image{
		// from the February bundle
		"site/app:1": {Name: "site/app:1", Target: ocispec.Descriptor{Digest: d("app-feb")}, Labels: map[string]string{CreatedLabel: createdValue(feb)}},
		"site/db:1":  {Name: "site/db:1", Target: ocispec.Descriptor{Digest: d("db")}, Labels: map[string]string{CreatedLabel: createdValue(feb)}},
		// pulled, or imported before images carried the label
		"site/web:1": {Name: "site/web:1", Target: ocispec.Descriptor{Digest: d("web-new")}},
	}}
	bundle := func(created time.Time, imgs map[string]digest.Digest) (*Manifest, *ocispec.Index) {
		m, idx := &Manifest{Created: created}, &ocispec.Index{}
		for _, name := range []string{"site/app:1", "site/db:1", "site/web:1", "site/new:1"} {
			if dg, ok := imgs[name]; ok {
				m.Images = append(m.Images, Image{Name: name, Digest: dg})
				idx.Manifests = append(idx.Manifests, ocispec.Descriptor{Digest: dg})
			}
		}
		return m, idx
	}
	ctx := context.Background()

	// The January bundle: app would move back; db is the same image (no
	// move); web has no known origin; new is new.
	m, idx := bundle(jan, map[string]digest.Digest{"site/app:1": d("app-jan"), "site/db:1": d("db"), "site/web:1": d("web-old"), "site/new:1": d("new")})
	got, err := Downgrades(ctx, store, m, idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "site/app:1" || got[0].From != d("app-feb") || got[0].To != d("app-jan") || !got[0].Had.Equal(feb) {
		t.Fatalf("downgrades of the older bundle: %+v, want site/app:1 only", got)
	}
	err = downgradeError(got)
	if !errors.Is(err, ErrDowngrade) || !strings.Contains(err.Error(), "--allow-downgrade") || !strings.Contains(err.Error(), "site/app:1") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error: %q", err)
	}

	// The same February bundle again, or a later one: no downgrade.
	for _, created := range []time.Time{feb, feb.Add(time.Hour)} {
		m, idx = bundle(created, map[string]digest.Digest{"site/app:1": d("app-mar"), "site/db:1": d("db2")})
		if got, err := Downgrades(ctx, store, m, idx); err != nil || len(got) != 0 {
			t.Errorf("bundle created %s: downgrades %+v %v", created, got, err)
		}
	}
}
