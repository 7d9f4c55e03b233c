package assets

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/embedded/assets/manifest"
)

// bundle is a set of packed assets in a file system: the embedded files/ in
// production, a fstest.MapFS in tests.
type bundle struct {
	fsys fs.FS
}

// entries returns every asset's metadata, sorted by name. No entries at all
// means a build without assets.
func (b bundle) entries() ([]manifest.Entry, error) {
	names, err := fs.Glob(b.fsys, "*"+manifest.EntrySuffix)
	if err != nil {
		return nil, fmt.Errorf("listing embedded assets: %w", err)
	}
	if len(names) == 0 {
		return nil, ErrNoAssets
	}
	sort.Strings(names)
	out := make([]manifest.Entry, 0, len(names))
	for _, n := range names {
		raw, err := fs.ReadFile(b.fsys, n)
		if err != nil {
			return nil, fmt.Errorf("reading embedded asset metadata %s: %w", n, err)
		}
		e, err := manifest.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("embedded asset metadata %s: %w", n, err)
		}
		if e.EntryName() != n {
			return nil, fmt.Errorf("embedded asset metadata %s describes %q", n, e.Name)
		}
		out = append(out, e)
	}
	return out, nil
}

// binaries returns the entries of kind Binary.
func (b bundle) binaries() ([]manifest.Entry, error) {
	all, err := b.entries()
	if err != nil {
		return nil, err
	}
	var bins []manifest.Entry
	for _, e := range all {
		if e.Kind == manifest.Binary {
			bins = append(bins, e)
		}
	}
	if len(bins) == 0 {
		return nil, ErrNoAssets
	}
	return bins, nil
}

func (b bundle) versions() map[string]string {
	out := map[string]string{}
	all, err := b.entries()
	if err != nil {
		// Versions is informational: a build without (or with broken)
		// assets simply reports none.
		return out
	}
	for _, e := range all {
		out[e.Component] = e.Version
	}
	return out
}

// open returns the decompressed, verified content of the asset called name.
func (b bundle) open(name string) (io.ReadCloser, error) {
	all, err := b.entries()
	if err != nil {
		return nil, err
	}
	for _, e := range all {
		if e.Name == name {
			return b.openEntry(e, all, dicts{})
		}
	}
	return nil, fmt.Errorf("embedded asset %s: %w", name, ErrNoAssets)
}

// dicts holds the dictionaries loaded while decoding a set of assets, by
// asset name, so installing several binaries compressed against the same one
// decodes it once.
type dicts map[string][]byte

// openEntry opens e, one of all; a dictionary it needs is taken from loaded
// or decoded into it.
func (b bundle) openEntry(e manifest.Entry, all []manifest.Entry, loaded dicts) (io.ReadCloser, error) {
	// One goroutine: assets are decoded once per install and speed hardly
	// matters, while extra decoder goroutines and buffers would.
	opts := []zstd.DOption{zstd.WithDecoderConcurrency(1)}
	if e.Dict != "" {
		d, content, err := b.dict(e, all, loaded)
		if err != nil {
			return nil, err
		}
		opts = append(opts, zstd.WithDecoderDictRaw(d.DictID(), content))
	}
	f, err := b.fsys.Open(e.BlobName())
	if err != nil {
		return nil, fmt.Errorf("opening embedded asset %s: %w", e.Name, err)
	}
	dec, err := zstd.NewReader(f, opts...)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompressing embedded asset %s: %w", e.Name, err)
	}
	return &verifiedReader{entry: e, src: f, dec: dec, hash: sha256.New()}, nil
}

// dict returns the entry and the verified content of e's dictionary.
func (b bundle) dict(e manifest.Entry, all []manifest.Entry, loaded dicts) (manifest.Entry, []byte, error) {
	for _, d := range all {
		if d.Name != e.Dict {
			continue
		}
		if content, ok := loaded[d.Name]; ok {
			return d, content, nil
		}
		// One level only: decoding a dictionary never needs another.
		if d.Dict != "" {
			return d, nil, fmt.Errorf("embedded asset %s: its dictionary %s has a dictionary of its own", e.Name, d.Name)
		}
		r, err := b.openEntry(d, all, loaded)
		if err != nil {
			return d, nil, err
		}
		defer r.Close()
		content := make([]byte, 0, d.Size)
		buf := bytes.NewBuffer(content)
		if _, err := buf.ReadFrom(r); err != nil {
			return d, nil, fmt.Errorf("loading the dictionary of embedded asset %s: %w", e.Name, err)
		}
		loaded[d.Name] = buf.Bytes()
		return d, buf.Bytes(), nil
	}
	return manifest.Entry{}, nil, fmt.Errorf("embedded asset %s: its dictionary %s is not embedded", e.Name, e.Dict)
}

// verifiedReader decompresses an asset and checks its size and digest, so a
// damaged blob or a build mix-up is an error rather than a broken runc.
type verifiedReader struct {
	entry manifest.Entry
	src   fs.File
	dec   *zstd.Decoder
	hash  hash.Hash
	n     int64
}

func (r *verifiedReader) Read(p []byte) (int, error) {
	n, err := r.dec.Read(p)
	r.n += int64(n)
	r.hash.Write(p[:n])
	if r.n > r.entry.Size {
		return n, fmt.Errorf("embedded asset %s: longer than the %d bytes recorded", r.entry.Name, r.entry.Size)
	}
	if errors.Is(err, io.EOF) {
		if sum := hex.EncodeToString(r.hash.Sum(nil)); r.n != r.entry.Size || sum != r.entry.SHA256 {
			return n, fmt.Errorf("embedded asset %s: content does not match its recorded digest (got %d bytes sha256:%s)",
				r.entry.Name, r.n, sum)
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("decompressing embedded asset %s: %w", r.entry.Name, err)
	}
	return n, nil
}

func (r *verifiedReader) Close() error {
	r.dec.Close()
	return r.src.Close()
}

// setDigest identifies a set of binaries by name, content and size. Names are
// safe to join with separators because manifest.Entry.Validate refuses path
// characters in them.
func setDigest(bins []manifest.Entry) string {
	h := sha256.New()
	for _, e := range bins {
		fmt.Fprintf(h, "%s\x00%s\x00%d\n", e.Name, e.SHA256, e.Size)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// isMarker tells marker files (ours, from any kubox version) from the rest.
func isMarker(name string) bool {
	return strings.HasPrefix(name, markerPrefix) && path.Base(name) == name
}
