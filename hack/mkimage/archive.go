package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// imageSpec is everything one image is made of.
type imageSpec struct {
	Name       string // full reference with tag
	OS, Arch   string
	Entries    []entry
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
}

// Annotation keys containerd's importer reads to name an image: its own key
// carries the full reference; the OCI key carries only the tag, as the OCI
// spec suggests and as containerd's own exporter writes it.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationOCIRefName     = "org.opencontainers.image.ref.name"
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// checkName accepts only fully qualified names with an explicit tag, such as
// localhost/kubox/pause:3.10. containerd stores the annotation verbatim while
// the kubelet normalizes what it looks up ("busybox:1" becomes
// "docker.io/library/busybox:1"), so a short name would import fine and then
// never be found.
func checkName(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image name %q: %w", ref, err)
	}
	domain, _, _ := strings.Cut(ref, "/")
	if !strings.Contains(ref, "/") || (domain != "localhost" && !strings.ContainsAny(domain, ".:")) {
		return name.Tag{}, fmt.Errorf("image name %q: must start with a registry host, e.g. localhost/", ref)
	}
	if !strings.HasSuffix(ref, ":"+tag.TagStr()) {
		return name.Tag{}, fmt.Errorf("image name %q: must have an explicit tag", ref)
	}
	return tag, nil
}

// buildImage assembles the OCI image for spec.
func buildImage(spec imageSpec) (v1.Image, error) {
	layerTar, err := buildLayer(spec.Entries)
	if err != nil {
		return nil, fmt.Errorf("building layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("compressing layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: epoch}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "kubox hack/mkimage",
			Comment:   spec.Name,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = spec.OS, spec.Arch
	cfg.Created = created
	env := spec.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	cfg.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        env,
		User:       spec.User,
		WorkingDir: spec.WorkingDir,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// writeArchive writes spec's image to out as a tar of an OCI image layout
// whose index names the image for containerd. out is replaced atomically.
func writeArchive(out string, spec imageSpec) error {
	tag, err := checkName(spec.Name)
	if err != nil {
		return err
	}
	img, err := buildImage(spec)
	if err != nil {
		return err
	}

	outDir := filepath.Dir(out)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(outDir, ".mkimage-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	layoutDir := filepath.Join(work, "layout")
	lp, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return fmt.Errorf("creating OCI layout: %w", err)
	}
	if err := lp.WriteImage(img); err != nil {
		return fmt.Errorf("writing image into OCI layout: %w", err)
	}
	// The index entry is built by hand because layout.AppendImage also sets
	// artifactType, which belongs on artifacts rather than plain images.
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := img.Size()
	if err != nil {
		return err
	}
	err = lp.AppendDescriptor(v1.Descriptor{
		MediaType: mt,
		Digest:    digest,
		Size:      size,
		Platform:  &v1.Platform{OS: spec.OS, Architecture: spec.Arch},
		Annotations: map[string]string{
			annotationContainerdName: spec.Name,
			annotationOCIRefName:     tag.TagStr(),
		},
	})
	if err != nil {
		return fmt.Errorf("adding image to OCI index: %w", err)
	}

	tmp := filepath.Join(work, "archive.tar")
	if err := tarDir(tmp, layoutDir); err != nil {
		return fmt.Errorf("archiving OCI layout: %w", err)
	}
	return os.Rename(tmp, out)
}

// tarDir writes the tree under dir to a new tar file at dst, in lexical order
// with fixed owners, modes and times so the archive is reproducible.
func tarDir(dst, dir string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: 0o644, Format: tar.FormatPAX}
		if d.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			return tw.WriteHeader(hdr)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected file type in OCI layout", rel)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
