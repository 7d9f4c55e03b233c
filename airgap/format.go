// Package airgap is kubox's image bundle: one file that carries container
// images to a box with no network, is verified before anything from it is
// used, is imported into containerd once, and keeps its images pinned so the
// kubelet's image garbage collection never removes them.
//
// A bundle is a zstd-compressed tar. Its first entry is the bundle manifest
// (kubox-bundle.json), which lists every image (name, manifest digest, size)
// and every blob (digest, size), and the digest of the OCI index. An optional
// ed25519 signature over the manifest's bytes follows (kubox-bundle.sig).
// Then comes an OCI image layout (oci-layout, index.json, blobs/sha256/...)
// whose index names each image with containerd's and the OCI annotation. The
// manifest's own sha256 is the bundle's identity: it covers every byte of
// content through the digests it lists.
//
// A bundle may also carry an application: Kubernetes manifests (format v2,
// see FormatApp), listed in the bundle manifest by name, digest and size
// (so the signature covers them) and held as entries manifests/<file>
// between the index and the blobs. An import installs them, after the
// images, as the named application's files, which services/manifests
// applies (see InstallApp).
package airgap

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubox/kubox/services/manifests"
)

// Names of the tar entries that are not blobs, in the order a bundle holds them.
const (
	ManifestEntry  = "kubox-bundle.json"
	SignatureEntry = "kubox-bundle.sig"
	LayoutEntry    = "oci-layout"
	IndexEntry     = "index.json"
	blobsPrefix    = "blobs/sha256/"
	// AppPrefix names the entries of an application's manifests (v2).
	AppPrefix = "manifests/"
)

// Format is the format of a bundle of images only: what kubox writes for
// one (so an older kubox still reads it) and reads.
const Format = "kubox.bundle.v1"

// FormatApp is the format of a bundle that also carries an application's
// manifests. An older kubox refuses it with a line naming the format
// instead of importing the images and ignoring the manifests.
const FormatApp = "kubox.bundle.v2"

// Annotation keys that name an image in the OCI index: containerd's importer
// reads the first (the full reference); the second is the OCI spec's (the tag).
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Labels kubox puts on the images it imports. PinnedLabel is the CRI
// plugin's: a pinned image is reported to the kubelet as pinned, and the
// kubelet's image garbage collection skips it.
const (
	PinnedLabel = "io.cri-containerd.pinned"
	PinnedValue = "pinned"
	BundleLabel = "io.kubox.airgap.bundle"
	// CreatedLabel is the creation time (RFC 3339) of the bundle the
	// image's tag last came from: how an import tells that its bundle is
	// older than what the node has (see Downgrades).
	CreatedLabel = "io.kubox.airgap.created"
)

// Limits that keep a hostile bundle from making the reader allocate much.
const (
	maxManifestSize = 16 << 20
	maxIndexSize    = 16 << 20
	maxImageJSON    = 4 << 20 // an image manifest
	maxSigSize      = 4 << 10
	maxTrailer      = 1 << 20 // after the tar's end: padding only
	// An application's manifests are held in memory until they are
	// installed: a file is at most maxAppFile, all of them maxAppTotal.
	maxAppFile  = 4 << 20
	maxAppTotal = 16 << 20
	maxAppFiles = 1000
)

// Manifest lists everything a bundle holds.
type Manifest struct {
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	// Index is the OCI index (index.json) of the layout.
	Index  Blob    `json:"index"`
	Images []Image `json:"images"`
	// Blobs are every blob under blobs/sha256/, each once, in the order
	// they appear in the tar.
	Blobs []Blob `json:"blobs"`
	// App names the application the manifests below are (FormatApp
	// only): a later bundle of the same name replaces its files.
	App string `json:"app,omitempty"`
	// Manifests are the application's Kubernetes manifests (FormatApp
	// only), in the order of their entries.
	Manifests []AppFile `json:"manifests,omitempty"`
}

// AppFile is one Kubernetes manifest file of a bundle's application.
type AppFile struct {
	Name   string        `json:"name"` // a file name: no directory
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// Image is one named image in a bundle.
type Image struct {
	Name      string        `json:"name"`
	Digest    digest.Digest `json:"digest"` // the image manifest's digest
	MediaType string        `json:"mediaType"`
	Platform  string        `json:"platform,omitempty"` // os/arch[/variant]
	// Size is the sum of the image's manifest, config and layers.
	Size int64 `json:"size"`
}

// Blob is one content-addressed file of the layout.
type Blob struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// Size is the sum of every blob's size: what an import writes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, b := range m.Blobs {
		n += b.Size
	}
	return n
}

// validate checks the manifest on its own: format, well-formed digests,
// no duplicate blobs or images, every image manifest among the blobs.
func (m *Manifest) validate() error {
	switch m.Format {
	case Format:
		if m.App != "" || len(m.Manifests) > 0 {
			return fmt.Errorf("a %s bundle carries no manifests: made by another kubox version?", Format)
		}
	case FormatApp:
		if err := m.validateApp(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("bundle format %q is neither %q nor %q: made by another kubox version?", m.Format, Format, FormatApp)
	}
	if err := checkBlob(m.Index); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	blobs := make(map[digest.Digest]int64, len(m.Blobs))
	for _, b := range m.Blobs {
		if err := checkBlob(b); err != nil {
			return err
		}
		if _, dup := blobs[b.Digest]; dup {
			return fmt.Errorf("blob %s is listed twice", b.Digest)
		}
		blobs[b.Digest] = b.Size
	}
	if len(m.Images) == 0 {
		return fmt.Errorf("the bundle lists no image")
	}
	names := map[string]bool{}
	for _, im := range m.Images {
		if im.Name == "" || strings.ContainsAny(im.Name, " \t\n") {
			return fmt.Errorf("image name %q is not a valid reference", im.Name)
		}
		if names[im.Name] {
			return fmt.Errorf("image %s is listed twice", im.Name)
		}
		names[im.Name] = true
		if err := im.Digest.Validate(); err != nil || im.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("image %s: digest %q is not a sha256 digest", im.Name, im.Digest)
		}
		if _, ok := blobs[im.Digest]; !ok {
			return fmt.Errorf("image %s: its manifest %s is not among the bundle's blobs", im.Name, im.Digest)
		}
	}
	return nil
}

// validateApp checks the application part: a valid name, at least one
// file, safe and distinct file names, sizes within bounds.
func (m *Manifest) validateApp() error {
	if err := CheckAppName(m.App); err != nil {
		return err
	}
	if len(m.Manifests) == 0 {
		return fmt.Errorf("application %s lists no manifest", m.App)
	}
	if len(m.Manifests) > maxAppFiles {
		return fmt.Errorf("application %s lists %d manifests, more than the %d allowed", m.App, len(m.Manifests), maxAppFiles)
	}
	var total int64
	names := map[string]bool{}
	for _, f := range m.Manifests {
		if err := CheckAppFileName(f.Name); err != nil {
			return err
		}
		if names[f.Name] {
			return fmt.Errorf("manifest %s is listed twice", f.Name)
		}
		names[f.Name] = true
		if err := f.Digest.Validate(); err != nil || f.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("manifest %s: digest %q is not a sha256 digest", f.Name, f.Digest)
		}
		if f.Size < 0 || f.Size > maxAppFile {
			return fmt.Errorf("manifest %s is %d bytes: at most %d are allowed", f.Name, f.Size, maxAppFile)
		}
		total += f.Size
	}
	if total > maxAppTotal {
		return fmt.Errorf("the manifests are %d bytes together: at most %d are allowed", total, maxAppTotal)
	}
	return nil
}

// CheckAppName checks an application name: a DNS label (lower-case
// letters, digits and '-', at most 63), as it names a directory on the
// nodes and the files in `kubox manifests ls`.
func CheckAppName(name string) error {
	if name == "" {
		return errors.New("the application has no name")
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("application name %q: want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63", name)
	}
	return nil
}

// CheckAppFileName checks a manifest's file name: a plain name (no
// directory, so nothing can land outside the application's directory),
// not hidden, ending in .yaml, .yml or .json.
func CheckAppFileName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return fmt.Errorf("manifest file name %q: empty or longer than 255 bytes", name)
	case strings.ContainsAny(name, "/\\\x00") || name == "." || name == "..":
		return fmt.Errorf("%w: manifest file name %q is a path, not a file name", ErrUnsafePath, name)
	case !manifests.IsManifest(name):
		return fmt.Errorf("manifest file name %q: want a .yaml, .yml or .json file that is not hidden", name)
	}
	return nil
}

func checkBlob(b Blob) error {
	if err := b.Digest.Validate(); err != nil || b.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob digest %q is not a sha256 digest", b.Digest)
	}
	if b.Size < 0 {
		return fmt.Errorf("blob %s has a negative size", b.Digest)
	}
	return nil
}

// ID is the bundle's identity: the digest of its manifest's bytes.
func ID(rawManifest []byte) digest.Digest { return digest.FromBytes(rawManifest) }

// signature is the content of SignatureEntry.
type signature struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"keyID"`     // KeyID of the public key
	Signature []byte `json:"signature"` // over the manifest's bytes
}

func marshalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return b, nil
}
