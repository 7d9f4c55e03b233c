package airgap

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Errors a bundle can be refused with; each is wrapped with what was wrong.
var (
	ErrNotBundle      = errors.New("not a kubox image bundle")
	ErrTruncated      = errors.New("the bundle is truncated (an incomplete copy?)")
	ErrDigestMismatch = errors.New("blob digest mismatch: the bundle is corrupt")
	ErrUnsafePath     = errors.New("unsafe path in bundle")
	ErrInvalid        = errors.New("invalid bundle")
)

// Docker's manifest media type, which containerd imports like OCI's.
const dockerManifestV2 = "application/vnd.docker.distribution.manifest.v2+json"

// Reader reads a bundle as a stream, in one pass: NewReader reads and checks
// everything up to the first blob; Next returns each blob, whose reader
// fails (instead of returning io.EOF) when its content does not match its
// digest; the final Next returns io.EOF only once the whole bundle has been
// read and every listed and referenced blob was there. Nothing read from a
// Reader may be trusted until then.
type Reader struct {
	zr  *zstd.Decoder
	tr  *tar.Reader
	man Manifest
	idx ocispec.Index

	rawManifest []byte
	sig         *signature
	// app are the application's manifests, by file name, read and
	// checked against their digests before the first blob.
	app map[string][]byte

	listed  map[digest.Digest]int64 // from the manifest
	seen    map[digest.Digest]bool
	targets map[digest.Digest]string // image manifest digest -> image name
	// refs are the blobs the image manifests reference, with their sizes.
	refs map[digest.Digest]int64
	// owner is the first image (index) that uses a blob, as far as known.
	owner map[digest.Digest]int
	cur   *blobReader
	err   error // sticky
	done  bool
}

// NewReader starts reading a bundle from r (the compressed file). Close the
// Reader when done with it.
func NewReader(r io.Reader) (*Reader, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotBundle, err)
	}
	b := &Reader{zr: zr, tr: tar.NewReader(zr), seen: map[digest.Digest]bool{}, targets: map[digest.Digest]string{}, refs: map[digest.Digest]int64{}, owner: map[digest.Digest]int{}}
	if err := b.readHead(); err != nil {
		zr.Close()
		return nil, err
	}
	return b, nil
}

// Close releases the decompressor.
func (b *Reader) Close() { b.zr.Close() }

// Manifest is the bundle's manifest (checked for consistency, but its blobs
// are only proven once Next has returned io.EOF).
func (b *Reader) Manifest() *Manifest { return &b.man }

// ID is the bundle's identity, the digest of its manifest.
func (b *Reader) ID() digest.Digest { return ID(b.rawManifest) }

// Signed tells whether the bundle carries a signature, and the key ID it names.
func (b *Reader) Signed() (bool, string) {
	if b.sig == nil {
		return false, ""
	}
	return true, b.sig.KeyID
}

// Owner tells which image (its index in the manifest) first uses blob d,
// once that image's manifest has been read.
func (b *Reader) Owner(d digest.Digest) (int, bool) {
	i, ok := b.owner[d]
	return i, ok
}

// Index is the OCI index of the bundle's layout.
func (b *Reader) Index() *ocispec.Index { return &b.idx }

func (b *Reader) readHead() error {
	hdr, err := b.tr.Next()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// Empty or cut before the first entry: a half-copied bundle
			// looks like this too.
			return fmt.Errorf("%w: %v", ErrTruncated, err)
		}
		return notBundle(err)
	}
	if hdr.Name != ManifestEntry {
		return fmt.Errorf("%w: it starts with %q, not %s (make bundles with \"kubox airgap bundle create\")", ErrNotBundle, hdr.Name, ManifestEntry)
	}
	raw, err := b.readSmall(hdr, maxManifestSize)
	if err != nil {
		return err
	}
	b.rawManifest = raw
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b.man); err != nil {
		return fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
	}
	if err := b.man.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b.listed = make(map[digest.Digest]int64, len(b.man.Blobs))
	for _, bl := range b.man.Blobs {
		b.listed[bl.Digest] = bl.Size
	}
	for i, im := range b.man.Images {
		b.targets[im.Digest] = im.Name
		if _, ok := b.owner[im.Digest]; !ok {
			b.owner[im.Digest] = i
		}
	}

	hdr, err = b.next()
	if err != nil {
		return err
	}
	if hdr.Name == SignatureEntry {
		raw, err := b.readSmall(hdr, maxSigSize)
		if err != nil {
			return err
		}
		var s signature
		if err := json.Unmarshal(raw, &s); err != nil || len(s.Signature) == 0 {
			return fmt.Errorf("%w: signature entry is not a kubox signature", ErrInvalid)
		}
		b.sig = &s
		if hdr, err = b.next(); err != nil {
			return err
		}
	}
	if hdr.Name != LayoutEntry {
		return fmt.Errorf("%w: expected %s after the manifest, found %q", ErrInvalid, LayoutEntry, hdr.Name)
	}
	raw, err = b.readSmall(hdr, 4096)
	if err != nil {
		return err
	}
	var lay ocispec.ImageLayout
	if err := json.Unmarshal(raw, &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("%w: %s is not an OCI layout version %s", ErrInvalid, LayoutEntry, ocispec.ImageLayoutVersion)
	}

	if hdr, err = b.next(); err != nil {
		return err
	}
	if hdr.Name != IndexEntry {
		return fmt.Errorf("%w: expected %s, found %q", ErrInvalid, IndexEntry, hdr.Name)
	}
	raw, err = b.readSmall(hdr, maxIndexSize)
	if err != nil {
		return err
	}
	if d := digest.FromBytes(raw); d != b.man.Index.Digest || int64(len(raw)) != b.man.Index.Size {
		return fmt.Errorf("%w: %s is %s (%d bytes), the manifest says %s (%d bytes)", ErrDigestMismatch, IndexEntry, d, len(raw), b.man.Index.Digest, b.man.Index.Size)
	}
	if err := json.Unmarshal(raw, &b.idx); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, IndexEntry, err)
	}
	if err := b.checkIndex(); err != nil {
		return err
	}
	return b.readApp()
}

// readApp reads the application's manifests, which follow the index in the
// order the manifest lists them, each checked against its digest: they are
// small (bounded by validate) and kept in memory until the import installs
// them.
func (b *Reader) readApp() error {
	if len(b.man.Manifests) == 0 {
		return nil
	}
	b.app = make(map[string][]byte, len(b.man.Manifests))
	for _, f := range b.man.Manifests {
		hdr, err := b.next()
		if err == io.EOF {
			return fmt.Errorf("%w: manifest %s is missing", ErrTruncated, f.Name)
		}
		if err != nil {
			return err
		}
		if hdr.Name != AppPrefix+f.Name {
			return fmt.Errorf("%w: expected %s%s, found %q", ErrInvalid, AppPrefix, f.Name, hdr.Name)
		}
		if hdr.Size != f.Size {
			return fmt.Errorf("%w: manifest %s is %d bytes, the bundle manifest says %d", ErrInvalid, f.Name, hdr.Size, f.Size)
		}
		raw, err := b.readSmall(hdr, maxAppFile)
		if err != nil {
			return err
		}
		if d := digest.FromBytes(raw); d != f.Digest {
			return fmt.Errorf("%w: manifest %s has content with digest %s, the bundle manifest says %s", ErrDigestMismatch, f.Name, d, f.Digest)
		}
		b.app[f.Name] = raw
	}
	return nil
}

// App returns the application's manifests (none for a bundle of images
// only), in the order the manifest lists them. Each was checked against
// the digest the manifest lists, so they are as trustworthy as the
// manifest: trust them once its signature was checked.
func (b *Reader) App() []AppSource {
	out := make([]AppSource, 0, len(b.man.Manifests))
	for _, f := range b.man.Manifests {
		out = append(out, AppSource{Name: f.Name, Data: b.app[f.Name]})
	}
	return out
}

// checkIndex matches the OCI index against the manifest: the same images,
// the same names, the same digests.
func (b *Reader) checkIndex() error {
	if len(b.idx.Manifests) != len(b.man.Images) {
		return fmt.Errorf("%w: %s has %d entries, the manifest lists %d images", ErrInvalid, IndexEntry, len(b.idx.Manifests), len(b.man.Images))
	}
	for i, d := range b.idx.Manifests {
		im := b.man.Images[i]
		name := d.Annotations[AnnotationImageName]
		if name != im.Name || d.Digest != im.Digest {
			return fmt.Errorf("%w: %s entry %d is %q %s, the manifest says %q %s", ErrInvalid, IndexEntry, i, name, d.Digest, im.Name, im.Digest)
		}
		if d.MediaType != ocispec.MediaTypeImageManifest && d.MediaType != dockerManifestV2 {
			return fmt.Errorf("%w: image %s is a %q; a bundle holds one single-platform manifest per image", ErrInvalid, im.Name, d.MediaType)
		}
		if size, ok := b.listed[d.Digest]; !ok || size != d.Size {
			return fmt.Errorf("%w: image %s: manifest blob size %d does not match the bundle's list", ErrInvalid, im.Name, d.Size)
		}
	}
	return nil
}

// next reads the next tar header and checks its name and type. Directory
// entries of the layout are skipped.
func (b *Reader) next() (*tar.Header, error) {
	for {
		hdr, err := b.tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, readErr(err)
		}
		if err := checkEntryName(hdr.Name); err != nil {
			return nil, err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if hdr.Name == "blobs/" || hdr.Name == "blobs/sha256/" {
				continue
			}
			return nil, fmt.Errorf("%w: unexpected directory %q", ErrInvalid, hdr.Name)
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrInvalid, hdr.Name, hdr.Typeflag)
		}
		if hdr.Size < 0 {
			return nil, fmt.Errorf("%w: entry %q has a negative size", ErrInvalid, hdr.Name)
		}
		return hdr, nil
	}
}

// checkEntryName refuses absolute paths and paths that climb out with "..",
// whatever the rest of the entry says.
func checkEntryName(name string) error {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %q is absolute or malformed", ErrUnsafePath, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return fmt.Errorf("%w: %q climbs out with \"..\"", ErrUnsafePath, name)
		}
	}
	if c := path.Clean(name); c != strings.TrimSuffix(name, "/") {
		return fmt.Errorf("%w: %q is not a clean path", ErrUnsafePath, name)
	}
	return nil
}

func (b *Reader) readSmall(hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrInvalid, hdr.Name, hdr.Size, limit)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(b.tr, data); err != nil {
		return nil, readErr(err)
	}
	return data, nil
}

// Next returns the next blob and a reader for its content. The reader
// returns an error matching ErrDigestMismatch instead of io.EOF when the
// content is not what its digest says. Unread content is read and checked
// by the following Next. After the last blob, Next checks that the bundle
// was complete and returns io.EOF.
func (b *Reader) Next() (Blob, io.Reader, error) {
	if b.err != nil {
		return Blob{}, nil, b.err
	}
	if b.done {
		return Blob{}, nil, io.EOF
	}
	bl, r, err := b.nextBlob()
	if err != nil {
		if err == io.EOF {
			b.done = true
		} else {
			b.err = err
		}
		return Blob{}, nil, err
	}
	return bl, r, nil
}

func (b *Reader) nextBlob() (Blob, io.Reader, error) {
	if b.cur != nil {
		if _, err := io.Copy(io.Discard, b.cur); err != nil {
			return Blob{}, nil, err
		}
		if err := b.cur.finish(); err != nil {
			return Blob{}, nil, err
		}
		b.cur = nil
	}
	hdr, err := b.next()
	if err == io.EOF {
		if err := b.complete(); err != nil {
			return Blob{}, nil, err
		}
		return Blob{}, nil, io.EOF
	}
	if err != nil {
		return Blob{}, nil, err
	}
	hex, ok := strings.CutPrefix(hdr.Name, blobsPrefix)
	if !ok {
		return Blob{}, nil, fmt.Errorf("%w: unexpected entry %q", ErrInvalid, hdr.Name)
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if err := d.Validate(); err != nil {
		return Blob{}, nil, fmt.Errorf("%w: entry %q is not named by a sha256 digest", ErrInvalid, hdr.Name)
	}
	size, ok := b.listed[d]
	if !ok {
		return Blob{}, nil, fmt.Errorf("%w: blob %s is not listed in the bundle manifest", ErrInvalid, d)
	}
	if size != hdr.Size {
		return Blob{}, nil, fmt.Errorf("%w: blob %s is %d bytes, the manifest says %d", ErrInvalid, d, hdr.Size, size)
	}
	if b.seen[d] {
		return Blob{}, nil, fmt.Errorf("%w: blob %s appears twice", ErrInvalid, d)
	}
	b.seen[d] = true
	br := &blobReader{b: b, want: d, size: size, h: digest.SHA256.Hash()}
	if _, isImage := b.targets[d]; isImage {
		if size > maxImageJSON {
			return Blob{}, nil, fmt.Errorf("%w: image manifest %s is %d bytes, more than the %d allowed", ErrInvalid, d, size, maxImageJSON)
		}
		br.keep = &bytes.Buffer{}
	}
	b.cur = br
	return Blob{Digest: d, Size: size}, br, nil
}

// complete runs at the end of the tar: every listed blob was there, every
// blob an image references is listed, and the compressed stream ends cleanly.
func (b *Reader) complete() error {
	for _, bl := range b.man.Blobs {
		if !b.seen[bl.Digest] {
			return fmt.Errorf("%w: blob %s is missing", ErrTruncated, bl.Digest)
		}
	}
	for d := range b.refs {
		if !b.seen[d] {
			return fmt.Errorf("%w: blob %s, referenced by an image, is not in the bundle", ErrInvalid, d)
		}
	}
	// The rest of the zstd stream (tar padding) must decode too: the frame's
	// checksum is only checked at its end. Bounded, so a stream that
	// decompresses to endless zeros after the tar is refused, not read.
	n, err := io.Copy(io.Discard, io.LimitReader(b.zr, maxTrailer+1))
	if err != nil {
		return readErr(err)
	}
	if n > maxTrailer {
		return fmt.Errorf("%w: data after the end of the tar", ErrInvalid)
	}
	return nil
}

// leaveDigest tells the reader that whoever consumes the current blob
// checks its digest, so the reader need not hash it too. Image manifests
// are still hashed (their references are read). Call it before reading.
func (b *Reader) leaveDigest() {
	if b.cur != nil && b.cur.keep == nil && b.cur.n == 0 {
		b.cur.h = nil
	}
}

// blobReader hands out one blob's content and checks it at its end.
type blobReader struct {
	b    *Reader
	want digest.Digest
	size int64
	n    int64
	h    hash.Hash
	keep *bytes.Buffer // image manifests are kept to read their references
	fin  bool
	err  error
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.b.tr.Read(p)
	if n > 0 {
		if r.h != nil {
			r.h.Write(p[:n])
		}
		if r.keep != nil {
			r.keep.Write(p[:n])
		}
		r.n += int64(n)
	}
	if err == io.EOF {
		if ferr := r.finish(); ferr != nil {
			r.err = ferr
			return n, ferr
		}
		return n, io.EOF
	}
	if err != nil {
		r.err = readErr(err)
		return n, r.err
	}
	return n, nil
}

// finish checks the digest once the whole blob was read (once).
func (r *blobReader) finish() error {
	if r.fin {
		return r.err
	}
	r.fin = true
	if r.n != r.size {
		r.err = fmt.Errorf("%w: blob %s", ErrTruncated, r.want)
		return r.err
	}
	if r.h == nil {
		// The consumer checks the digest (containerd's content store does
		// on commit).
	} else if got := digest.NewDigest(digest.SHA256, r.h); got != r.want {
		r.err = fmt.Errorf("%w: blob %s has content with digest %s", ErrDigestMismatch, r.want, got)
		return r.err
	}
	if r.keep != nil {
		r.err = r.b.addRefs(r.want, r.keep.Bytes())
	}
	return r.err
}

// addRefs records the config and layers an image manifest needs; each must
// be listed, with the same size.
func (b *Reader) addRefs(d digest.Digest, raw []byte) error {
	name := b.targets[d]
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%w: image %s: manifest: %v", ErrInvalid, name, err)
	}
	descs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	for _, c := range descs {
		size, ok := b.listed[c.Digest]
		if !ok {
			return fmt.Errorf("%w: image %s needs blob %s, which the bundle does not list", ErrInvalid, name, c.Digest)
		}
		if size != c.Size {
			return fmt.Errorf("%w: image %s: blob %s is %d bytes, the image says %d", ErrInvalid, name, c.Digest, size, c.Size)
		}
		b.refs[c.Digest] = c.Size
		if _, ok := b.owner[c.Digest]; !ok {
			b.owner[c.Digest] = b.owner[d]
		}
	}
	return nil
}

func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	if errors.Is(err, ErrTruncated) || errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnsafePath) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrInvalid, err)
}

func notBundle(err error) error {
	return fmt.Errorf("%w (%v): make bundles with \"kubox airgap bundle create\"", ErrNotBundle, err)
}

// Verify reads the whole bundle and checks every blob, without storing
// anything.
func (b *Reader) Verify() error {
	for {
		_, r, err := b.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}
