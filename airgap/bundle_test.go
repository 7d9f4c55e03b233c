package airgap

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// testImages are two small random images sharing their first layer, so a
// bundle of both must hold that layer once.
func testImages(t testing.TB) []Source {
	t.Helper()
	a, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := a.Layers()
	if err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(3000, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	b, err := mutate.AppendLayers(mutate.MediaType(emptyOCI(t), "application/vnd.oci.image.manifest.v1+json"), layers[0], extra)
	if err != nil {
		t.Fatal(err)
	}
	return []Source{{Name: "localhost/test/a:1", Image: withPlatform(t, a)}, {Name: "docker.io/library/b:2", Image: withPlatform(t, b)}}
}

func emptyOCI(t testing.TB) v1.Image {
	img, err := random.Image(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func withPlatform(t testing.TB, img v1.Image) v1.Image {
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeBundle(t testing.TB, srcs []Source, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, srcs, WriteOptions{SignKey: key, Created: time.Unix(1700000000, 0).UTC()}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func verify(data []byte) (*Reader, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r, r.Verify()
}

func TestWriteReadRoundTrip(t *testing.T) {
	srcs := testImages(t)
	data := writeBundle(t, srcs, nil)
	r, err := verify(data)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Manifest()
	if len(m.Images) != 2 || m.Images[0].Name != "localhost/test/a:1" || m.Images[1].Name != "docker.io/library/b:2" {
		t.Fatalf("images: %+v", m.Images)
	}
	for i, s := range srcs {
		d, _ := s.Image.Digest()
		if m.Images[i].Digest.String() != d.String() {
			t.Errorf("image %s digest %s, want %s", s.Name, m.Images[i].Digest, d)
		}
		size, _ := s.Image.Size()
		if m.Images[i].Size <= size {
			t.Errorf("image %s size %d, want more than its manifest's %d", s.Name, m.Images[i].Size, size)
		}
		if m.Images[i].Platform != "linux/amd64" {
			t.Errorf("platform %q", m.Images[i].Platform)
		}
	}
	// a: manifest, config, 2 layers; b: manifest, config, 1 new layer.
	if len(m.Blobs) != 7 {
		t.Errorf("%d blobs, want 7 (the shared layer once)", len(m.Blobs))
	}
	// The index names the images the way containerd's importer reads them.
	for i, d := range r.Index().Manifests {
		if d.Annotations[AnnotationImageName] != m.Images[i].Name {
			t.Errorf("index entry %d annotations %v", i, d.Annotations)
		}
	}
	if r.Index().Manifests[1].Annotations[AnnotationRefName] != "2" {
		t.Errorf("OCI ref name annotation: %v", r.Index().Manifests[1].Annotations)
	}
	if r.ID() != digest.FromBytes(r.rawManifest) {
		t.Error("ID is not the manifest digest")
	}
	// Same content, same time: same bytes, same ID.
	if again := writeBundle(t, srcs, nil); !bytes.Equal(again, data) {
		t.Error("writing the same images twice gave different bundles")
	}
}

func TestSignature(t *testing.T) {
	dir := t.TempDir()
	pub, err := GenerateKeyFiles(filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKeyFiles(filepath.Join(dir, "k.key"), filepath.Join(dir, "k2.pub")); err == nil {
		t.Fatal("an existing signing key was replaced")
	}
	sk, err := LoadPrivateKey(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadPublicKey(filepath.Join(dir, "k.pub"))
	if err != nil || !loaded.Equal(pub) {
		t.Fatalf("public key: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	srcs := testImages(t)
	signed := writeBundle(t, srcs, sk)
	unsigned := writeBundle(t, srcs, nil)

	check := func(data []byte, p SignaturePolicy) (bool, error) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return p.Check(r)
	}
	if ok, err := check(signed, SignaturePolicy{PublicKey: pub, Require: true}); err != nil || !ok {
		t.Errorf("signed bundle with its key: %v %v", ok, err)
	}
	if _, err := check(signed, SignaturePolicy{PublicKey: other}); err == nil || !strings.Contains(err.Error(), "signed by key") {
		t.Errorf("signed bundle with another key: %v", err)
	}
	if _, err := check(unsigned, SignaturePolicy{PublicKey: pub, Require: true}); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned bundle, signature required: %v", err)
	}
	// A configured key alone means bundles must be signed by it.
	if _, err := check(unsigned, SignaturePolicy{PublicKey: pub}); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), "airgap-allow-unsigned") {
		t.Errorf("unsigned bundle, key configured: %v", err)
	}
	if ok, err := check(unsigned, SignaturePolicy{PublicKey: pub, AllowUnsigned: true}); err != nil || ok {
		t.Errorf("unsigned bundle, key configured, unsigned allowed: %v %v", ok, err)
	}
	if _, err := check(unsigned, SignaturePolicy{PublicKey: pub, Require: true, AllowUnsigned: true}); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned bundle, signature required and unsigned allowed: %v (require wins)", err)
	}
	if ok, err := check(unsigned, SignaturePolicy{}); err != nil || ok {
		t.Errorf("unsigned bundle, no key: %v %v", ok, err)
	}
	if _, err := check(signed, SignaturePolicy{PublicKey: other, AllowUnsigned: true}); err == nil {
		t.Error("bundle signed by another key accepted because unsigned ones are allowed")
	}
	if _, err := check(unsigned, SignaturePolicy{Require: true}); err == nil {
		t.Error("signature required without a key: accepted")
	}
	// A manifest changed after signing: same signature, other bytes.
	ents := untar(t, signed)
	ents[0].data = bytes.Replace(ents[0].data, []byte(`"created": "2023`), []byte(`"created": "2024`), 1)
	if _, err := check(retar(t, ents), SignaturePolicy{PublicKey: pub}); err == nil || !strings.Contains(err.Error(), "changed after signing") {
		t.Errorf("edited signed manifest: %v", err)
	}
}

// entry is one tar entry of a hand-made bundle.
type entry struct {
	name string
	typ  byte
	data []byte
	link string
}

func untar(t testing.TB, data []byte) []entry {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{name: hdr.Name, typ: hdr.Typeflag, data: b})
	}
}

func retar(t testing.TB, ents []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.link, Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write(e.data)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func blobIndex(ents []entry) int {
	for i, e := range ents {
		if strings.HasPrefix(e.name, blobsPrefix) && len(e.data) > 1000 {
			return i
		}
	}
	return -1
}

func TestBadBundles(t *testing.T) {
	good := writeBundle(t, testImages(t), nil)
	ents := untar(t, good)
	bi := blobIndex(ents)
	mutated := func(f func([]entry) []entry) []byte {
		c := make([]entry, len(ents))
		for i, e := range ents {
			c[i] = e
			c[i].data = append([]byte(nil), e.data...)
		}
		return retar(t, f(c))
	}
	var plainTar bytes.Buffer
	tw := tar.NewWriter(&plainTar)
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Size: 2, Mode: 0o644})
	tw.Write([]byte("[]"))
	tw.Close()

	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"empty file", nil, ErrTruncated, ""},
		{"truncated in the middle", good[:len(good)/2], ErrTruncated, ""},
		{"truncated near the end", good[:len(good)-10], ErrTruncated, ""},
		{"random bytes", bytes.Repeat([]byte("not a bundle "), 100), ErrNotBundle, ""},
		{"docker save tarball", plainTar.Bytes(), ErrNotBundle, ""},
		{"blob content changed", mutated(func(e []entry) []entry { e[bi].data[500] ^= 0xff; return e }), ErrDigestMismatch, ""},
		{"blob missing", mutated(func(e []entry) []entry { return append(e[:bi], e[bi+1:]...) }), ErrTruncated, "missing"},
		{"absolute path", mutated(func(e []entry) []entry { e[bi].name = "/" + e[bi].name; return e }), ErrUnsafePath, ""},
		{"dot-dot path", mutated(func(e []entry) []entry { e[bi].name = "blobs/../../etc/passwd"; return e }), ErrUnsafePath, ""},
		{"dot-dot first entry", mutated(func(e []entry) []entry { e[0].name = "../" + ManifestEntry; return e }), ErrNotBundle, ""},
		{"symlink entry", mutated(func(e []entry) []entry {
			return append(e, entry{name: "blobs/sha256/" + strings.Repeat("a", 64), typ: tar.TypeSymlink, link: "/etc/passwd"})
		}), ErrInvalid, "not a regular file"},
		{"blob not listed", mutated(func(e []entry) []entry {
			return append(e, entry{name: "blobs/sha256/" + digest.FromString("x").Encoded(), typ: tar.TypeReg, data: []byte("x")})
		}), ErrInvalid, "not listed"},
		{"blob twice", mutated(func(e []entry) []entry { return append(e, e[bi]) }), ErrInvalid, "twice"},
		{"index edited", mutated(func(e []entry) []entry {
			e[2].data = bytes.Replace(e[2].data, []byte("localhost/test/a:1"), []byte("localhost/test/z:1"), 1)
			return e
		}), ErrDigestMismatch, "index.json"},
		{"data after the tar", func() []byte {
			var buf bytes.Buffer
			zw, _ := zstd.NewWriter(&buf)
			zr, _ := zstd.NewReader(bytes.NewReader(good))
			io.Copy(zw, zr)
			zr.Close()
			zw.Write(make([]byte, 2<<20))
			zw.Close()
			return buf.Bytes()
		}(), ErrInvalid, "after the end"},
		{"manifest not JSON", mutated(func(e []entry) []entry { e[0].data = []byte("{"); return e }), ErrInvalid, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verify(c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want it to say %q", err, c.text)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is more than one line: %q", err)
			}
		})
	}
}

func TestCheckEntryName(t *testing.T) {
	for name, ok := range map[string]bool{
		"index.json": true, "blobs/sha256/ab": true, "blobs/": true,
		"/index.json": false, "../x": false, "blobs/../../x": false, "blobs//x": false, "./x": false, "a\\b": false,
	} {
		if err := checkEntryName(name); (err == nil) != ok {
			t.Errorf("%q: %v", name, err)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                   "docker.io/library/busybox:latest",
		"busybox:1.36":              "docker.io/library/busybox:1.36",
		"localhost/kubox/pause:3.1": "localhost/kubox/pause:3.1",
		"127.0.0.1:5000/x/y:z":      "127.0.0.1:5000/x/y:z",
	} {
		if got, err := NormalizeName(in); err != nil || got != want {
			t.Errorf("%s: %s %v, want %s", in, got, err, want)
		}
	}
}
