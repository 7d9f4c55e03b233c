package assets

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests use the assets really embedded in this build. They skip when
// the package was built without them (plain `go test` before `make assets`).

var installed = []string{"runc", "containerd-shim-runc-v2", "bridge", "host-local", "loopback", "portmap"}

func installReal(t *testing.T, dir string) {
	t.Helper()
	err := Install(dir)
	if errors.Is(err, ErrNoAssets) {
		t.Skip("built without runtime assets: run `make assets` first to test the real ones")
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	installReal(t, dir)
	for _, name := range installed {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 || fi.Size() < 1<<20 {
			t.Errorf("%s: mode %v size %d, want an executable of at least 1 MiB", name, fi.Mode(), fi.Size())
		}
	}
	out, err := exec.Command(filepath.Join(dir, "runc"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "runc version "+strings.TrimPrefix(Versions()["runc"], "v")) {
		t.Errorf("runc --version: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(dir, "containerd-shim-runc-v2"), "-v").CombinedOutput()
	if err != nil || !strings.Contains(string(out), Versions()["containerd-shim-runc-v2"]) {
		t.Errorf("containerd-shim-runc-v2 -v: %v\n%s", err, out)
	}
}

func TestInstallTwiceKeepsFiles(t *testing.T) {
	dir := t.TempDir()
	installReal(t, dir)
	before := mtimes(t, dir, installed...)
	time.Sleep(20 * time.Millisecond) // beyond the file system's timestamp granularity
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	for n, mt := range mtimes(t, dir, installed...) {
		if !mt.Equal(before[n]) {
			t.Errorf("%s was rewritten by a second Install", n)
		}
	}
}

func TestInstallRestores(t *testing.T) {
	dir := t.TempDir()
	installReal(t, dir)
	if err := os.Remove(filepath.Join(dir, "portmap")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "runc"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "portmap")); err != nil {
		t.Errorf("portmap not restored: %v", err)
	}
	if out, err := exec.Command(filepath.Join(dir, "runc"), "--version").CombinedOutput(); err != nil {
		t.Errorf("runc not restored: %v\n%s", err, out)
	}
}

func TestPauseImageArchive(t *testing.T) {
	rc, err := PauseImageArchive()
	if errors.Is(err, ErrNoAssets) {
		t.Skip("built without runtime assets: run `make assets` first to test the real ones")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	found := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == "index.json" {
			if err := json.NewDecoder(tr).Decode(&index); err != nil {
				t.Fatalf("index.json: %v", err)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("the pause archive has no index.json: not an OCI image layout")
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != PauseImage {
		t.Errorf("index.json does not name the image %s: %+v", PauseImage, index)
	}
}

func TestVersions(t *testing.T) {
	v := Versions()
	if len(v) == 0 {
		t.Skip("built without runtime assets: run `make assets` first to test the real ones")
	}
	for _, k := range []string{"runc", "containerd-shim-runc-v2", "cni-plugins", "pause"} {
		if v[k] == "" {
			t.Errorf("Versions() lacks %q: %v", k, v)
		}
	}
	if tag := PauseImage[strings.LastIndex(PauseImage, ":")+1:]; v["pause"] != tag {
		t.Errorf("pause version %q does not match PauseImage %s", v["pause"], PauseImage)
	}
}
