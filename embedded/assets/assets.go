// Package assets carries the runtime pieces that kubox needs beside itself
// and cannot link in: runc, containerd-shim-runc-v2, the CNI plugins kubox
// uses (bridge, host-local, loopback, portmap) and the pause image. They are
// built by `make assets` into files/ as zstd-compressed blobs, each with a
// manifest.Entry, and embedded into the kubox binary, so a host needs nothing
// installed and nothing downloaded.
//
// A kubox built with plain `go build` (without `make`) embeds only a
// placeholder; Install and PauseImageArchive then return ErrNoAssets.
package assets

import (
	"embed"
	"errors"
	"io"
	"io/fs"
)

// PauseImage is the name of the embedded sandbox image, as containerd lists it
// after PauseImageArchive has been imported.
const PauseImage = "localhost/kubox/pause:3.10"

// ErrNoAssets reports a kubox built without its runtime assets.
var ErrNoAssets = errors.New("kubox was built without its runtime assets; build it with make")

// embedded holds files/: the packed assets, or only the README placeholder.
//
//go:embed files
var embedded embed.FS

// Install writes runc, containerd-shim-runc-v2 and the CNI plugins into binDir
// (created if missing), each mode 0755 and replaced atomically. A marker file
// named after the digest of the embedded set records what was installed, so a
// start with nothing changed only stats files; a missing, replaced or modified
// file is detected and restored, and a file whose content already matches is
// left alone. A kubox built without assets gets ErrNoAssets.
func Install(binDir string) error {
	return newBundle().install(binDir)
}

// PauseImageArchive returns the pause image as an OCI image-layout tar stream
// naming itself PauseImage, for import into containerd. The stream is checked
// against the digest recorded at build time: a mismatch surfaces as a read
// error before io.EOF.
func PauseImageArchive() (io.ReadCloser, error) {
	return newBundle().open(pauseArchiveName)
}

// Versions returns the version of each embedded runtime component, keyed by
// component: "runc", "containerd-shim-runc-v2", "cni-plugins", "pause". It is
// empty for a kubox built without assets.
func Versions() map[string]string {
	return newBundle().versions()
}

// pauseArchiveName is the asset the Makefile packs the pause image as.
const pauseArchiveName = "pause.tar"

func newBundle() bundle {
	sub, err := fs.Sub(embedded, "files")
	if err != nil {
		// fs.Sub fails only for an invalid path, and "files" is valid.
		panic(err)
	}
	return bundle{fsys: sub}
}
