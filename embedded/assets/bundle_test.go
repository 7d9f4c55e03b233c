package assets

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/embedded/assets/manifest"
)

// fakeAsset is one asset for a synthetic bundle.
type fakeAsset struct {
	name, component, version string
	kind                     manifest.Kind
	content                  []byte
	dict                     string // another asset of the bundle, as hack/assetpack -dict
}

// fakeBundle packs assets the way hack/assetpack does, so the install logic is
// tested on every run, also where kubox was built without real assets.
func fakeBundle(t *testing.T, assets ...fakeAsset) bundle {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	fsys := fstest.MapFS{"README": {Data: []byte("placeholder\n")}}
	byName := map[string]manifest.Entry{}
	for _, a := range assets {
		sum := sha256.Sum256(a.content)
		byName[a.name] = manifest.Entry{Name: a.name, Component: a.component, Version: a.version, Kind: a.kind,
			Size: int64(len(a.content)), SHA256: hex.EncodeToString(sum[:]), Dict: a.dict}
	}
	for _, a := range assets {
		e := byName[a.name]
		meta, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		fsys[e.EntryName()] = &fstest.MapFile{Data: meta}
		blob := enc.EncodeAll(a.content, nil)
		if a.dict != "" {
			blob = encodeWithDict(t, a.content, byName[a.dict], dictContent(assets, a.dict))
		}
		fsys[e.BlobName()] = &fstest.MapFile{Data: blob}
	}
	return bundle{fsys: fsys}
}

func dictContent(assets []fakeAsset, name string) []byte {
	for _, a := range assets {
		if a.name == name {
			return a.content
		}
	}
	return nil
}

func encodeWithDict(t *testing.T, content []byte, d manifest.Entry, dict []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderDictRaw(d.DictID(), dict))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(content, nil)
}

func bin(name, version, content string) fakeAsset {
	return fakeAsset{name: name, component: name, version: version, kind: manifest.Binary, content: []byte(content)}
}

func standardFake(t *testing.T) bundle {
	return fakeBundle(t,
		bin("runc", "1.5.2", "#!/bin/sh\necho runc\n"),
		bin("containerd-shim-runc-v2", "v2.3.7", "#!/bin/sh\necho shim\n"),
		fakeAsset{name: "bridge", component: "cni-plugins", version: "v1.9.1", kind: manifest.Binary, content: []byte("bridge")},
		fakeAsset{name: "pause.tar", component: "pause", version: "3.10", kind: manifest.Image, content: []byte("not really a tar")},
	)
}

func mtimes(t *testing.T, dir string, names ...string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = fi.ModTime()
	}
	return out
}

func TestFakeInstallWritesExecutables(t *testing.T) {
	b := standardFake(t)
	dir := filepath.Join(t.TempDir(), "bin") // Install creates it
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"runc": "#!/bin/sh\necho runc\n", "bridge": "bridge"} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode = %v, want 0755", name, fi.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pause.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image asset was installed as a binary (err=%v)", err)
	}
	ents, _ := os.ReadDir(dir)
	var markers, temps int
	for _, d := range ents {
		if isMarker(d.Name()) {
			markers++
		}
		if strings.Contains(d.Name(), ".tmp-") {
			temps++
		}
	}
	if markers != 1 || temps != 0 {
		t.Errorf("bin dir has %d markers and %d temp files, want 1 and 0", markers, temps)
	}
}

func TestFakeInstallIsIdempotent(t *testing.T) {
	b := standardFake(t)
	dir := t.TempDir()
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	names := []string{"runc", "containerd-shim-runc-v2", "bridge"}
	// Push mtimes into the past so that any rewrite is visible even on a
	// file system with coarse timestamps.
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, n := range names {
		if err := os.Chtimes(filepath.Join(dir, n), past, past); err != nil {
			t.Fatal(err)
		}
	}
	// The marker no longer matches the files' stamps, so this run hashes
	// them, finds the content right and must not rewrite anything.
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	for n, mt := range mtimes(t, dir, names...) {
		if !mt.Equal(past) {
			t.Errorf("%s was rewritten though its content matched", n)
		}
	}
	// And now the warm path: marker matches, nothing is opened at all.
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	for n, mt := range mtimes(t, dir, names...) {
		if !mt.Equal(past) {
			t.Errorf("%s was rewritten on a warm start", n)
		}
	}
}

func TestFakeInstallRestoresDamage(t *testing.T) {
	b := standardFake(t)
	dir := t.TempDir()
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	runc := filepath.Join(dir, "runc")
	shim := filepath.Join(dir, "containerd-shim-runc-v2")
	bridge := filepath.Join(dir, "bridge")
	if err := os.Remove(runc); err != nil {
		t.Fatal(err)
	}
	// Same size, different bytes, and an mtime that differs from the
	// recorded one (as any real write would give).
	if err := os.WriteFile(shim, bytes.Repeat([]byte{'x'}, len("#!/bin/sh\necho shim\n")), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(shim, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bridge, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(runc); string(got) != "#!/bin/sh\necho runc\n" {
		t.Errorf("missing runc not restored: %q", got)
	}
	if got, _ := os.ReadFile(shim); string(got) != "#!/bin/sh\necho shim\n" {
		t.Errorf("corrupted shim not restored: %q", got)
	}
	if fi, _ := os.Stat(bridge); fi.Mode().Perm() != 0o755 {
		t.Errorf("bridge mode not restored: %v", fi.Mode())
	}
}

func TestFakeInstallUpgrade(t *testing.T) {
	dir := t.TempDir()
	old := fakeBundle(t, bin("runc", "1.0", "old runc"), bin("loopback", "v1", "loopback"))
	if err := old.install(dir); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "loopback"), past, past); err != nil {
		t.Fatal(err)
	}
	upgraded := fakeBundle(t, bin("runc", "2.0", "new runc!"), bin("loopback", "v1", "loopback"))
	if err := upgraded.install(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "runc")); string(got) != "new runc!" {
		t.Errorf("runc not upgraded: %q", got)
	}
	if mt := mtimes(t, dir, "loopback")["loopback"]; !mt.Equal(past) {
		t.Error("unchanged loopback was rewritten during an upgrade")
	}
	ents, _ := os.ReadDir(dir)
	var markers []string
	for _, d := range ents {
		if isMarker(d.Name()) {
			markers = append(markers, d.Name())
		}
	}
	if len(markers) != 1 {
		t.Errorf("markers after upgrade: %v, want exactly the new one", markers)
	}
}

func TestFakeWithoutAssets(t *testing.T) {
	b := bundle{fsys: fstest.MapFS{"README": {Data: []byte("placeholder\n")}}}
	if err := b.install(t.TempDir()); !errors.Is(err, ErrNoAssets) {
		t.Errorf("install without assets: err = %v, want ErrNoAssets", err)
	}
	if _, err := b.open(pauseArchiveName); !errors.Is(err, ErrNoAssets) {
		t.Errorf("open without assets: err = %v, want ErrNoAssets", err)
	}
	if v := b.versions(); len(v) != 0 {
		t.Errorf("versions without assets = %v, want empty", v)
	}
	if !strings.Contains(ErrNoAssets.Error(), "build it with make") {
		t.Errorf("ErrNoAssets does not say how to fix it: %q", ErrNoAssets)
	}
}

func TestFakeVersions(t *testing.T) {
	got := standardFake(t).versions()
	want := map[string]string{"runc": "1.5.2", "containerd-shim-runc-v2": "v2.3.7", "cni-plugins": "v1.9.1", "pause": "3.10"}
	if len(got) != len(want) {
		t.Errorf("versions = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("versions[%q] = %q, want %q", k, got[k], v)
		}
	}
}

func TestFakeOpenVerifiesContent(t *testing.T) {
	b := standardFake(t)
	rc, err := b.open(pauseArchiveName)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "not really a tar" {
		t.Fatalf("open = %q, %v", got, err)
	}

	// Swap in a blob with other content: reading must fail, not succeed.
	fsys := b.fsys.(fstest.MapFS)
	enc, _ := zstd.NewWriter(nil)
	fsys["pause.tar.zst"] = &fstest.MapFile{Data: enc.EncodeAll([]byte("not really a taR"), nil)}
	enc.Close()
	rc, err = b.open(pauseArchiveName)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("reading a mismatched blob: err = %v, want a digest error", err)
	}
	// And Install refuses to put such content in place.
	bad := fakeBundle(t, bin("runc", "1", "good"))
	bad.fsys.(fstest.MapFS)["runc.zst"] = &fstest.MapFile{Data: []byte("garbage, not zstd")}
	dir := t.TempDir()
	if err := bad.install(dir); err == nil {
		t.Error("install of a corrupt blob succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "runc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a corrupt blob left runc behind (err=%v)", err)
	}
}

func TestFakeInstallWithDictionary(t *testing.T) {
	base := strings.Repeat("shared runtime code 0123456789 ", 2000)
	shim := bin("containerd-shim-runc-v2", "v2.3.7", base+"shim")
	runc := bin("runc", "1.5.2", base+"runc")
	runc.dict = shim.name
	bridge := fakeAsset{name: "bridge", component: "cni-plugins", version: "v1.9.1", kind: manifest.Binary,
		content: []byte(base + "bridge"), dict: shim.name}
	b := fakeBundle(t, shim, runc, bridge)
	dir := t.TempDir()
	if err := b.install(dir); err != nil {
		t.Fatal(err)
	}
	for _, a := range []fakeAsset{shim, runc, bridge} {
		got, err := os.ReadFile(filepath.Join(dir, a.name))
		if err != nil || !bytes.Equal(got, a.content) {
			t.Errorf("%s: installed content differs (err=%v)", a.name, err)
		}
	}
	// The blob holds only what the dictionary lacks.
	if n := len(b.fsys.(fstest.MapFS)["runc.zst"].Data); n > 200 {
		t.Errorf("runc.zst is %d bytes: not compressed against the shim?", n)
	}

	// Without its dictionary an asset cannot be decoded: a clear error.
	lone := fakeBundle(t, shim, runc)
	delete(lone.fsys.(fstest.MapFS), "containerd-shim-runc-v2.json")
	if _, err := lone.open("runc"); err == nil || !strings.Contains(err.Error(), "not embedded") {
		t.Errorf("open without the dictionary: err = %v", err)
	}

	// Compressed against other content than the dictionary embedded now:
	// refused, and nothing installed.
	other := bin("containerd-shim-runc-v2", "v2.3.7", base+"another shim")
	mixed := fakeBundle(t, other, runc)
	mixed.fsys.(fstest.MapFS)["runc.zst"] = b.fsys.(fstest.MapFS)["runc.zst"]
	dir = t.TempDir()
	if err := mixed.install(dir); err == nil {
		t.Error("install with a mismatched dictionary succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "runc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a mismatched dictionary left runc behind (err=%v)", err)
	}

	// A dictionary with a dictionary of its own is refused.
	shim2 := shim
	shim2.dict = "bridge"
	bridge2 := bridge
	bridge2.dict = ""
	chained := fakeBundle(t, shim2, runc, bridge2)
	if _, err := chained.open("runc"); err == nil || !strings.Contains(err.Error(), "of its own") {
		t.Errorf("open with a chained dictionary: err = %v", err)
	}
}
