package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func testSpec(t *testing.T) imageSpec {
	t.Helper()
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "index.html")
	if err := os.WriteFile(page, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _, err := parseArgs([]string{
		"-o", "unused", "-name", "localhost/test/img:7",
		"-file", "/usr/bin/tool=" + tool,
		"-file", "/www/index.html=" + page,
		"-symlink", "/bin/sh=../usr/bin/tool",
		"-dir", "/tmp=1777",
		"-cmd", `["/usr/bin/tool","a b"]`,
		"-user", "65535:65535",
	})
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// untar extracts an archive to a new directory, so gcr's layout reader can
// check it the way an importer would see it.
func untar(t *testing.T, archive string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestArchiveIsNamedOCILayout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := writeArchive(out, testSpec(t)); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(untar(t, out))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if got := desc.Annotations[annotationContainerdName]; got != "localhost/test/img:7" {
		t.Errorf("%s = %q", annotationContainerdName, got)
	}
	if got := desc.Annotations[annotationOCIRefName]; got != "7" {
		t.Errorf("%s = %q, want the tag", annotationOCIRefName, got)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != "amd64" {
		t.Errorf("platform = %+v", desc.Platform)
	}
	if desc.ArtifactType != "" {
		t.Errorf("artifactType = %q on a plain image", desc.ArtifactType)
	}

	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Config.Cmd, "|") != "/usr/bin/tool|a b" || cfg.Config.User != "65535:65535" || len(cfg.Config.Entrypoint) != 0 {
		t.Errorf("config = %+v", cfg.Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, hdr.Name+" "+string(rune(hdr.Typeflag))+" "+
			strings.TrimLeft(os.FileMode(hdr.Mode&0o777).String(), "-")+" "+hdr.Linkname)
		if hdr.Name == "tmp/" && hdr.Mode != 0o1777 {
			t.Errorf("/tmp mode = %o, want 1777", hdr.Mode)
		}
	}
	want := []string{
		"bin/ 5 rwxr-xr-x ",
		"bin/sh 2 rwxrwxrwx ../usr/bin/tool",
		"tmp/ 5 rwxrwxrwx ",
		"usr/ 5 rwxr-xr-x ",
		"usr/bin/ 5 rwxr-xr-x ",
		"usr/bin/tool 0 rwxr-x--- ",
		"www/ 5 rwxr-xr-x ",
		"www/index.html 0 rw-r--r-- ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestArchiveIsReproducible(t *testing.T) {
	spec := testSpec(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := writeArchive(a, spec); err != nil {
		t.Fatal(err)
	}
	if err := writeArchive(b, spec); err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Error("two builds of the same spec differ")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("output directory holds %d entries, want only the 2 archives", len(ents))
	}
}

func TestRejects(t *testing.T) {
	for _, ref := range []string{"busybox:1", "kubox/pause:3.10", "localhost/kubox/pause", "localhost/Kubox/pause:1"} {
		if _, err := checkName(ref); err == nil {
			t.Errorf("checkName(%q) accepted a name the kubelet would not find", ref)
		}
	}
	for _, ref := range []string{"localhost/kubox/pause:3.10", "registry.example:5000/x:y"} {
		if _, err := checkName(ref); err != nil {
			t.Errorf("checkName(%q): %v", ref, err)
		}
	}
	for _, entries := range [][]entry{
		{{Path: "relative", Type: dirEntry}},
		{{Path: "/", Type: dirEntry}},
		{{Path: "/a", Type: dirEntry}, {Path: "/a/", Type: dirEntry}},
		{{Path: "/a", Type: symlinkEntry, Target: "b"}, {Path: "/a/c", Type: dirEntry}},
	} {
		if _, err := buildLayer(entries); err == nil {
			b, _ := json.Marshal(entries)
			t.Errorf("buildLayer(%s) succeeded", b)
		}
	}
	if _, _, err := parseArgs([]string{"-o", "x", "-name", "localhost/a:b", "-cmd", "/bin/sh -c"}); err == nil {
		t.Error("a -cmd that is not a JSON array was accepted")
	}
}
