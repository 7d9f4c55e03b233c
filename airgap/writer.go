package airgap

import (
	"archive/tar"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kubox/kubox/internal/fsutil"
)

// Source is one image to put into a bundle, under the name it will have on
// the node (a fully qualified reference, as the kubelet looks it up).
type Source struct {
	Name  string
	Image v1.Image
}

// WriteOptions tune Write.
type WriteOptions struct {
	// SignKey, when set, signs the manifest.
	SignKey ed25519.PrivateKey
	// Created is recorded in the manifest and as every entry's time;
	// default now.
	Created time.Time
	// Progress is called after each image's blobs are written.
	Progress func(ImageProgress)
	// App and Manifests, when Manifests is not empty, make the bundle
	// carry an application (FormatApp): its name and its manifest files
	// (see ReadAppDir), installed on the node after the images.
	App       string
	Manifests []AppSource
}

// ImageProgress reports one image written or imported.
type ImageProgress struct {
	Name   string
	Digest digest.Digest
	// Size is the image's whole size; New is what this step wrote or
	// imported (less when layers are shared with an earlier image or
	// already present).
	Size, New int64
	Took      time.Duration
}

// MBps is the rate of the step in MB/s (10^6 bytes).
func (p ImageProgress) MBps() float64 {
	if p.Took <= 0 {
		return 0
	}
	return float64(p.New) / 1e6 / p.Took.Seconds()
}

type imagePlan struct {
	src      Source
	desc     ocispec.Descriptor
	rawMan   []byte
	rawCfg   []byte
	cfgDesc  v1.Descriptor
	layers   []v1.Layer
	platform string
	size     int64
}

// Write writes a bundle of srcs to w. Layers shared between images are
// written once.
func Write(ctx context.Context, w io.Writer, srcs []Source, opts WriteOptions) (*Manifest, error) {
	if len(srcs) == 0 {
		return nil, fmt.Errorf("no image to bundle")
	}
	if opts.Created.IsZero() {
		opts.Created = time.Now().UTC().Truncate(time.Second)
	}
	plans := make([]imagePlan, 0, len(srcs))
	man := Manifest{Format: Format, Created: opts.Created}
	if len(opts.Manifests) > 0 || opts.App != "" {
		if err := CheckAppName(opts.App); err != nil {
			return nil, err
		}
		if err := checkAppSources(opts.Manifests); err != nil {
			return nil, err
		}
		man.Format, man.App = FormatApp, opts.App
		for _, f := range opts.Manifests {
			man.Manifests = append(man.Manifests, AppFile{Name: f.Name, Digest: digest.FromBytes(f.Data), Size: int64(len(f.Data))})
		}
		if err := man.validateApp(); err != nil {
			return nil, err
		}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	listed := map[digest.Digest]bool{}
	list := func(d v1.Hash, size int64) {
		dd := digest.Digest(d.String())
		if !listed[dd] {
			listed[dd] = true
			man.Blobs = append(man.Blobs, Blob{Digest: dd, Size: size})
		}
	}
	names := map[string]bool{}
	for _, s := range srcs {
		if names[s.Name] {
			return nil, fmt.Errorf("image %s is given twice", s.Name)
		}
		names[s.Name] = true
		p, err := plan(s)
		if err != nil {
			return nil, err
		}
		list(v1.Hash{Algorithm: "sha256", Hex: p.desc.Digest.Encoded()}, p.desc.Size)
		list(p.cfgDesc.Digest, p.cfgDesc.Size)
		for _, l := range p.layers {
			d, err := l.Digest()
			if err != nil {
				return nil, fmt.Errorf("image %s: layer digest: %w", s.Name, err)
			}
			size, err := l.Size()
			if err != nil {
				return nil, fmt.Errorf("image %s: layer size: %w", s.Name, err)
			}
			list(d, size)
		}
		plans = append(plans, p)
		man.Images = append(man.Images, Image{Name: s.Name, Digest: p.desc.Digest, MediaType: p.desc.MediaType, Platform: p.platform, Size: p.size})
		idx.Manifests = append(idx.Manifests, p.desc)
	}
	rawIdx, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	man.Index = Blob{Digest: digest.FromBytes(rawIdx), Size: int64(len(rawIdx))}
	rawMan, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}

	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	put := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: opts.Created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		n, err := io.Copy(tw, r)
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if n != size {
			return fmt.Errorf("write %s: %d bytes, expected %d", name, n, size)
		}
		return nil
	}
	putBytes := func(name string, data []byte) error { return put(name, int64(len(data)), bytesReader(data)) }

	if err := putBytes(ManifestEntry, rawMan); err != nil {
		return nil, err
	}
	if opts.SignKey != nil {
		sig, err := sign(opts.SignKey, rawMan)
		if err != nil {
			return nil, err
		}
		if err := putBytes(SignatureEntry, sig); err != nil {
			return nil, err
		}
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := putBytes(LayoutEntry, layout); err != nil {
		return nil, err
	}
	if err := putBytes(IndexEntry, rawIdx); err != nil {
		return nil, err
	}
	for _, f := range opts.Manifests {
		if err := putBytes(AppPrefix+f.Name, f.Data); err != nil {
			return nil, err
		}
	}
	written := map[string]bool{}
	for _, p := range plans {
		begin := time.Now()
		var n int64
		blob := func(d string, size int64, open func() (io.ReadCloser, error)) error {
			if written[d] {
				return nil
			}
			written[d] = true
			if err := ctx.Err(); err != nil {
				return err
			}
			rc, err := open()
			if err != nil {
				return fmt.Errorf("image %s: read blob %s: %w", p.src.Name, d, err)
			}
			defer rc.Close()
			n += size
			return put(blobsPrefix+digest.Digest(d).Encoded(), size, rc)
		}
		if err := blob(p.desc.Digest.String(), p.desc.Size, nopCloser(p.rawMan)); err != nil {
			return nil, err
		}
		if err := blob(p.cfgDesc.Digest.String(), p.cfgDesc.Size, nopCloser(p.rawCfg)); err != nil {
			return nil, err
		}
		for _, l := range p.layers {
			d, _ := l.Digest()
			size, _ := l.Size()
			if err := blob(d.String(), size, l.Compressed); err != nil {
				return nil, err
			}
		}
		if opts.Progress != nil {
			opts.Progress(ImageProgress{Name: p.src.Name, Digest: p.desc.Digest, Size: p.size, New: n, Took: time.Since(begin)})
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &man, nil
}

// plan reads an image's manifest and config (not its layers).
func plan(s Source) (imagePlan, error) {
	p := imagePlan{src: s}
	img := s.Image
	mt, err := img.MediaType()
	if err != nil {
		return p, fmt.Errorf("image %s: %w", s.Name, err)
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return p, fmt.Errorf("image %s: media type %s is not an image manifest", s.Name, mt)
	}
	if p.rawMan, err = img.RawManifest(); err != nil {
		return p, fmt.Errorf("image %s: manifest: %w", s.Name, err)
	}
	if p.rawCfg, err = img.RawConfigFile(); err != nil {
		return p, fmt.Errorf("image %s: config: %w", s.Name, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return p, fmt.Errorf("image %s: manifest: %w", s.Name, err)
	}
	p.cfgDesc = m.Config
	if got := digest.FromBytes(p.rawCfg).String(); got != m.Config.Digest.String() {
		return p, fmt.Errorf("image %s: config digest %s does not match its manifest (%s)", s.Name, got, m.Config.Digest)
	}
	if p.layers, err = img.Layers(); err != nil {
		return p, fmt.Errorf("image %s: layers: %w", s.Name, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return p, fmt.Errorf("image %s: config: %w", s.Name, err)
	}
	plat := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	p.platform = plat.String()
	tag := refTag(s.Name)
	p.desc = ocispec.Descriptor{
		MediaType: string(mt),
		Digest:    digest.FromBytes(p.rawMan),
		Size:      int64(len(p.rawMan)),
		Platform:  &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant},
		Annotations: map[string]string{
			AnnotationImageName: s.Name,
		},
	}
	if tag != "" {
		p.desc.Annotations[AnnotationRefName] = tag
	}
	p.size = int64(len(p.rawMan)) + m.Config.Size
	for _, l := range m.Layers {
		p.size += l.Size
	}
	return p, nil
}

// CreateFile writes a bundle to path: to a temp file beside it, fsynced,
// then renamed into place, so path never holds a partial bundle.
func CreateFile(ctx context.Context, path string, srcs []Source, opts WriteOptions) (*Manifest, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	man, err := Write(ctx, tmp, srcs, opts)
	if err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("write bundle %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	ok = true
	return man, fsutil.SyncDir(dir)
}
