package airgap

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NormalizeName returns the fully qualified name the kubelet looks an image
// up by: "busybox" is "docker.io/library/busybox:latest".
func NormalizeName(ref string) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", ref, err)
	}
	return n.String(), nil
}

// refTag is the tag of a normalized name, or "".
func refTag(ref string) string {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	if t, ok := n.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

// FromRegistry resolves ref in its registry to the image for platform
// (an index is resolved to that platform's manifest). Layers are fetched
// (and verified) only when the bundle is written. Loopback and private
// addresses are spoken to over plain HTTP, as go-containerregistry does.
func FromRegistry(ctx context.Context, ref string, platform v1.Platform, opts ...remote.Option) (Source, error) {
	full, err := NormalizeName(ref)
	if err != nil {
		return Source{}, err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return Source{}, fmt.Errorf("image name %q: %w", ref, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx), remote.WithPlatform(platform), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, opts...)
	img, err := remote.Image(r, opts...)
	if err != nil {
		return Source{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := checkPlatform(img, platform, full); err != nil {
		return Source{}, err
	}
	return Source{Name: full, Image: img}, nil
}

func checkPlatform(img v1.Image, want v1.Platform, name string) error {
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image %s: config: %w", name, err)
	}
	got := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if got.OS != want.OS || got.Architecture != want.Architecture || (want.Variant != "" && got.Variant != want.Variant) {
		return fmt.Errorf("image %s is for %s, not %s (choose with --platform)", name, got.String(), want.String())
	}
	return nil
}

// FromArchive reads the images of a local archive: an OCI image layout in a
// tar (as "ctr images export", "docker save" of recent Docker, or kubox's
// hack/mkimage write) or a "docker save" tarball. Images are named by their
// io.containerd.image.name annotation or their repo tags. work is a scratch
// dir for unpacking OCI layouts; the sources read from it until the bundle
// is written.
func FromArchive(path string, platform v1.Platform, work string) ([]Source, error) {
	kind, err := archiveKind(path)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "oci":
		dir, err := os.MkdirTemp(work, "oci-")
		if err != nil {
			return nil, err
		}
		if err := extractLayout(path, dir); err != nil {
			return nil, err
		}
		return fromLayout(path, dir, platform)
	default:
		return fromDockerArchive(path, platform)
	}
}

// archiveKind tells an OCI layout tar ("oci") from a docker save tarball
// ("docker") by its entry names.
func archiveKind(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var oci, docker bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("archive %s: not a tar of images (%v)", path, err)
		}
		switch strings.TrimPrefix(hdr.Name, "./") {
		case "index.json":
			oci = true
		case "manifest.json":
			docker = true
		}
	}
	switch {
	case oci:
		return "oci", nil
	case docker:
		return "docker", nil
	}
	return "", fmt.Errorf("archive %s: neither an OCI layout (index.json) nor a docker save tarball (manifest.json)", path)
}

// extractLayout unpacks an OCI layout tar into dir, refusing anything but
// plain files and directories inside dir.
func extractLayout(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive %s: %w", path, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if name == "" || name == "." {
			continue
		}
		if err := checkEntryName(name); err != nil {
			return fmt.Errorf("archive %s: %w", path, err)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("archive %s: %w", path, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("archive %s: %w", path, err)
			}
		default:
			return fmt.Errorf("archive %s: entry %q is not a file or directory", path, hdr.Name)
		}
	}
}

func fromLayout(archive, dir string, platform v1.Platform) ([]Source, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", archive, err)
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", archive, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", archive, err)
	}
	var out []Source
	for _, d := range im.Manifests {
		ref := d.Annotations[AnnotationImageName]
		if ref == "" {
			ref = d.Annotations[AnnotationRefName]
		}
		if ref == "" {
			continue
		}
		full, err := NormalizeName(ref)
		if err != nil {
			return nil, fmt.Errorf("archive %s: %w", archive, err)
		}
		var img v1.Image
		switch d.MediaType {
		case types.OCIManifestSchema1, types.DockerManifestSchema2:
			img, err = ii.Image(d.Digest)
		case types.OCIImageIndex, types.DockerManifestList:
			img, err = platformImage(ii, d.Digest, platform)
		default:
			err = fmt.Errorf("media type %s is not an image", d.MediaType)
		}
		if err != nil {
			return nil, fmt.Errorf("archive %s: image %s: %w", archive, full, err)
		}
		if err := checkPlatform(img, platform, full); err != nil {
			return nil, err
		}
		out = append(out, Source{Name: full, Image: img})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("archive %s: no named image in its index (annotation %s)", archive, AnnotationImageName)
	}
	return out, nil
}

func platformImage(ii v1.ImageIndex, h v1.Hash, platform v1.Platform) (v1.Image, error) {
	child, err := ii.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	im, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS == platform.OS && d.Platform.Architecture == platform.Architecture &&
			(platform.Variant == "" || d.Platform.Variant == platform.Variant) {
			return child.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no manifest for platform %s", platform.String())
}

func fromDockerArchive(path string, platform v1.Platform) ([]Source, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", path, err)
	}
	var out []Source
	for _, e := range m {
		for _, t := range e.RepoTags {
			tag, err := name.NewTag(t)
			if err != nil {
				return nil, fmt.Errorf("archive %s: tag %q: %w", path, t, err)
			}
			img, err := tarball.Image(opener, &tag)
			if err != nil {
				return nil, fmt.Errorf("archive %s: image %s: %w", path, t, err)
			}
			full, err := NormalizeName(t)
			if err != nil {
				return nil, err
			}
			if err := checkPlatform(img, platform, full); err != nil {
				return nil, err
			}
			out = append(out, Source{Name: full, Image: img})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("archive " + path + ": no tagged image in it")
	}
	return out, nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func nopCloser(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
