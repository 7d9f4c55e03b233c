package airgap

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	deployYAML = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: localhost/test/a:1, imagePullPolicy: Never}]
`
	cmJSON = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web-config"},"data":{"a":"1"}}`
)

func testApp() []AppSource {
	return []AppSource{{Name: "deploy.yaml", Data: []byte(deployYAML)}, {Name: "config.json", Data: []byte(cmJSON)}}
}

func writeAppBundle(t testing.TB, key ed25519.PrivateKey, app string, files []AppSource) []byte {
	t.Helper()
	var buf bytes.Buffer
	_, err := Write(context.Background(), &buf, testImages(t), WriteOptions{SignKey: key, Created: time.Unix(1700000000, 0).UTC(), App: app, Manifests: files})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAppRoundTrip(t *testing.T) {
	r, err := verify(writeAppBundle(t, nil, "shop", testApp()))
	if err != nil {
		t.Fatal(err)
	}
	m := r.Manifest()
	if m.Format != FormatApp || m.App != "shop" || len(m.Manifests) != 2 {
		t.Fatalf("format %q app %q manifests %+v", m.Format, m.App, m.Manifests)
	}
	got := r.App()
	for i, f := range testApp() {
		if got[i].Name != f.Name || !bytes.Equal(got[i].Data, f.Data) {
			t.Errorf("manifest %d: %s %q, want %s", i, got[i].Name, got[i].Data, f.Name)
		}
		if m.Manifests[i].Digest != digest.FromBytes(f.Data) || m.Manifests[i].Size != int64(len(f.Data)) {
			t.Errorf("manifest %d listed as %+v", i, m.Manifests[i])
		}
	}
	// A bundle of images only keeps the old format, so an older kubox
	// still reads it.
	r, err = verify(writeBundle(t, testImages(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifest().Format != Format || len(r.App()) != 0 {
		t.Fatalf("images-only bundle: format %q, %d manifests", r.Manifest().Format, len(r.App()))
	}
}

func TestAppTampered(t *testing.T) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	policy := SignaturePolicy{PublicKey: sk.Public().(ed25519.PublicKey)}
	ents := untar(t, writeAppBundle(t, sk, "shop", testApp()))
	appIdx := -1
	for i, e := range ents {
		if e.name == AppPrefix+"deploy.yaml" {
			appIdx = i
		}
	}
	if appIdx < 0 {
		t.Fatal("no manifests/deploy.yaml entry")
	}
	evil := bytes.Replace(ents[appIdx].data, []byte("localhost/test/a:1"), []byte("localhost/evil/a:1"), 1)

	// The entry changed: its digest no longer matches the listed one.
	c := cloneEntries(ents)
	c[appIdx].data = evil
	if _, err := verify(retar(t, c)); !errors.Is(err, ErrDigestMismatch) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("tampered manifest: %v, want a one-line %v", err, ErrDigestMismatch)
	}

	// The entry and its listing changed: the structure holds, the
	// signature over the listing does not.
	c = cloneEntries(ents)
	c[appIdx].data = evil
	var m Manifest
	if err := json.Unmarshal(c[0].data, &m); err != nil {
		t.Fatal(err)
	}
	m.Manifests[0].Digest, m.Manifests[0].Size = digest.FromBytes(evil), int64(len(evil))
	c[0].data, _ = json.Marshal(m)
	r, err := NewReader(bytes.NewReader(retar(t, c)))
	if err != nil {
		t.Fatalf("re-listed manifest should read: %v", err)
	}
	defer r.Close()
	if _, err := policy.Check(r); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("signature check of a re-listed manifest: %v", err)
	}
	// Untouched, it verifies.
	r2, err := NewReader(bytes.NewReader(retar(t, ents)))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if ok, err := policy.Check(r2); !ok || err != nil {
		t.Fatalf("good bundle: %v %v", ok, err)
	}
}

func cloneEntries(ents []entry) []entry {
	c := make([]entry, len(ents))
	for i, e := range ents {
		c[i] = e
		c[i].data = append([]byte(nil), e.data...)
	}
	return c
}

func TestAppBadBundles(t *testing.T) {
	ents := untar(t, writeAppBundle(t, nil, "shop", testApp()))
	relist := func(f func(*Manifest, []entry) []entry) []byte {
		c := cloneEntries(ents)
		var m Manifest
		if err := json.Unmarshal(c[0].data, &m); err != nil {
			t.Fatal(err)
		}
		c = f(&m, c)
		c[0].data, _ = json.Marshal(m)
		return retar(t, c)
	}
	at := func(c []entry, name string) int {
		for i, e := range c {
			if e.name == AppPrefix+name {
				return i
			}
		}
		t.Fatalf("no entry %s", name)
		return -1
	}
	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"entry climbs out", relist(func(m *Manifest, c []entry) []entry {
			c[at(c, "deploy.yaml")].name = AppPrefix + "../../etc/cron.d/x.yaml"
			return c
		}), ErrUnsafePath, ".."},
		{"listed name is a path", relist(func(m *Manifest, c []entry) []entry {
			m.Manifests[0].Name = "../x.yaml"
			c[at(c, "deploy.yaml")].name = AppPrefix + "x.yaml"
			return c
		}), ErrInvalid, "a path"},
		{"listed name is absolute", relist(func(m *Manifest, c []entry) []entry {
			m.Manifests[0].Name = "/etc/x.yaml"
			return c
		}), ErrInvalid, "a path"},
		{"not a manifest extension", relist(func(m *Manifest, c []entry) []entry {
			m.Manifests[0].Name = "run.sh"
			c[at(c, "deploy.yaml")].name = AppPrefix + "run.sh"
			return c
		}), ErrInvalid, ".yaml"},
		{"manifest missing", relist(func(m *Manifest, c []entry) []entry {
			i := at(c, "config.json")
			return append(c[:i], c[i+1:]...)
		}), ErrInvalid, "config.json"},
		{"manifest too big", relist(func(m *Manifest, c []entry) []entry {
			m.Manifests[0].Size = maxAppFile + 1
			return c
		}), ErrInvalid, "at most"},
		{"bad application name", relist(func(m *Manifest, c []entry) []entry { m.App = "Shop/../x"; return c }), ErrInvalid, "application name"},
		{"v1 with manifests", relist(func(m *Manifest, c []entry) []entry { m.Format = Format; return c }), ErrInvalid, "carries no manifests"},
		{"unknown format", relist(func(m *Manifest, c []entry) []entry { m.Format = "kubox.bundle.v9"; return c }), ErrInvalid, "kubox.bundle.v9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verify(c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.text) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %q, want one line saying %q", err, c.text)
			}
		})
	}
}

func TestReadAppDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ReadAppDir(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing dir: %v", err)
	}
	write("README.md", "# not a manifest")
	write(".hidden.yaml", "{")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAppDir(dir); err == nil || !strings.Contains(err.Error(), "holds no .yaml") {
		t.Fatalf("no manifests: %v", err)
	}
	write("deploy.yaml", deployYAML)
	files, err := ReadAppDir(dir)
	if err != nil || len(files) != 1 || files[0].Name != "deploy.yaml" {
		t.Fatalf("files %+v, err %v", files, err)
	}
	write("broken.yaml", "apiVersion: v1\nkind: [\n")
	if _, err := ReadAppDir(dir); err == nil || !strings.Contains(err.Error(), "broken.yaml does not parse") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("broken file: %v", err)
	}
	write("broken.yaml", "# only a comment\n")
	if _, err := ReadAppDir(dir); err == nil || !strings.Contains(err.Error(), "no Kubernetes object") {
		t.Fatalf("empty file: %v", err)
	}
	// Write refuses an application without a valid name.
	var buf bytes.Buffer
	if _, err := Write(context.Background(), &buf, testImages(t), WriteOptions{Manifests: testApp()}); err == nil {
		t.Fatal("a bundle with manifests and no application name was written")
	}
}

func TestInstallApp(t *testing.T) {
	root := t.TempDir()
	m1 := &Manifest{App: "shop", Created: time.Unix(1700000000, 0).UTC()}
	id1 := digest.FromString("bundle 1")
	ch, err := InstallApp(root, id1, m1, testApp())
	if err != nil || ch.Written != 2 || ch.Removed != 0 {
		t.Fatalf("first install: %+v %v", ch, err)
	}
	dir := filepath.Join(root, "shop")
	fi, err := os.Stat(filepath.Join(dir, "deploy.yaml"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("deploy.yaml: %v %v", fi, err)
	}
	// A newer bundle without config.json: it is removed, deploy.yaml is
	// left as it was.
	m2 := &Manifest{App: "shop", Created: m1.Created.Add(time.Hour)}
	id2 := digest.FromString("bundle 2")
	ch, err = InstallApp(root, id2, m2, testApp()[:1])
	if err != nil || ch.Written != 0 || ch.Same != 1 || ch.Removed != 1 {
		t.Fatalf("second install: %+v %v", ch, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); !os.IsNotExist(err) {
		t.Fatalf("config.json still there: %v", err)
	}
	info, err := InstalledApp(root, "shop")
	if err != nil || info.Bundle != id2 || len(info.Files) != 1 {
		t.Fatalf("installed: %+v %v", info, err)
	}
	// The older bundle is refused; the same or a newer one is not.
	var d AppDowngrade
	if err := CheckAppDowngrade(root, id1, &Manifest{App: "shop", Created: m1.Created}); !errors.As(err, &d) || !strings.Contains(err.Error(), "allow-downgrade") {
		t.Fatalf("downgrade: %v", err)
	}
	if err := CheckAppDowngrade(root, id2, m2); err != nil {
		t.Fatalf("same bundle: %v", err)
	}
	if err := CheckAppDowngrade(root, id1, &Manifest{App: "other", Created: m1.Created}); err != nil {
		t.Fatalf("another application: %v", err)
	}
}

// An application bundle is refused before anything reaches containerd (the
// client here is nil) when it has nowhere to go, or would move an
// installed application back to an older version.
func TestImportAppRefusedEarly(t *testing.T) {
	data := writeAppBundle(t, nil, "shop", testApp())
	if _, err := Import(context.Background(), nil, bytes.NewReader(data), ImportOptions{}); err == nil || !strings.Contains(err.Error(), "nowhere to install") {
		t.Fatalf("no apps dir: %v", err)
	}
	root := t.TempDir()
	newer := &Manifest{App: "shop", Created: time.Unix(1700000000, 0).Add(time.Hour).UTC()}
	if _, err := InstallApp(root, digest.FromString("newer"), newer, testApp()[:1]); err != nil {
		t.Fatal(err)
	}
	var d AppDowngrade
	if _, err := Import(context.Background(), nil, bytes.NewReader(data), ImportOptions{AppsDir: root}); !errors.As(err, &d) {
		t.Fatalf("older bundle: %v, want an AppDowngrade", err)
	}
}
