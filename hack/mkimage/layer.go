package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

type entryType int

const (
	fileEntry entryType = iota
	dirEntry
	symlinkEntry
)

// entry is one thing to put into the layer.
type entry struct {
	Path   string // absolute path in the image
	Type   entryType
	Source string // fileEntry: host file to copy
	Target string // symlinkEntry: link target
	Mode   int64  // dirEntry: permission bits
}

// epoch is every timestamp in the image: fixed, so builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// buildLayer returns an uncompressed tar of entries. Parent directories are
// added as needed (0755), entries come out sorted by path, and owners and
// times are fixed, so the bytes depend only on the entries' contents.
func buildLayer(entries []entry) ([]byte, error) {
	byPath := map[string]entry{}
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return nil, err
		}
		e.Path = p
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("%s is given twice", "/"+p)
		}
		byPath[p] = e
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if e, ok := byPath[dir]; ok {
				if e.Type != dirEntry {
					return nil, fmt.Errorf("/%s is needed as a directory for /%s", dir, p)
				}
				continue
			}
			byPath[dir] = entry{Path: dir, Type: dirEntry, Mode: 0o755}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	// Lexical order puts every directory before its contents.
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		if err := writeEntry(tw, byPath[p]); err != nil {
			return nil, fmt.Errorf("adding /%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, e entry) error {
	hdr := &tar.Header{
		Name:    e.Path,
		ModTime: epoch,
		Format:  tar.FormatPAX,
	}
	var data []byte
	switch e.Type {
	case dirEntry:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = e.Mode
	case symlinkEntry:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.Target
		hdr.Mode = 0o777
	case fileEntry:
		fi, err := os.Stat(e.Source)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", e.Source)
		}
		if data, err = os.ReadFile(e.Source); err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Mode = int64(fi.Mode().Perm())
		if fi.Mode()&os.ModeSetuid != 0 {
			hdr.Mode |= 0o4000
		}
		if fi.Mode()&os.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		hdr.Size = int64(len(data))
	default:
		return fmt.Errorf("unknown entry type %d", e.Type)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// cleanPath turns an absolute image path into the relative form a layer tar
// uses, refusing anything that could point outside the root.
func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q must be absolute", p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("image path %q names no file below /", p)
	}
	return c, nil
}
