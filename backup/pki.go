package backup

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	// maxPKIFiles and maxPKIFileSize bound the PKI part: a kubox PKI dir has
	// a few dozen files of a few KiB. The bounds catch a wrong path (the etcd
	// db passed as a PKI file) at write time, and bound a reader's work.
	maxPKIFiles    = 4096
	maxPKIFileSize = 16 << 20
)

// PKIFilesFromDir returns the regular files under dir as a WriteOptions.PKIFiles
// map: slash-separated path relative to dir -> path on disk. It fails on
// anything else than directories and regular files (a symlink could point
// outside dir, and restoring it faithfully is not this package's job).
func PKIFilesFromDir(dir string) (map[string]string, error) {
	files := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list PKI files in %s: %w", dir, err)
	}
	return files, nil
}

// checkPKIName accepts clean relative slash paths that stay inside the pki/
// dir on extraction.
func checkPKIName(name string) error {
	if name == "" || name == "." || strings.HasPrefix(name, "/") || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("invalid PKI file name %q: want a clean relative path", name)
	}
	return nil
}

// pkiNames tracks the PKI names seen so far, to refuse duplicates and a name
// that is both a file and a directory ("a" and "a/b"), which could not both
// be extracted.
type pkiNames struct {
	files map[string]bool
	dirs  map[string]bool
}

func newPKINames() *pkiNames {
	return &pkiNames{files: map[string]bool{}, dirs: map[string]bool{}}
}

func (s *pkiNames) add(name string) error {
	if err := checkPKIName(name); err != nil {
		return err
	}
	if s.files[name] || s.dirs[name] {
		return fmt.Errorf("PKI file name %q used twice", name)
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if s.files[d] {
			return fmt.Errorf("PKI file name %q is also a directory", d)
		}
	}
	s.files[name] = true
	for d := path.Dir(name); d != "." && !s.dirs[d]; d = path.Dir(d) {
		s.dirs[d] = true
	}
	return nil
}

type pkiFile struct{ name, path string }

// sortedPKI validates the PKI names and orders them, so the archive (and
// extraction) does not depend on map order.
func sortedPKI(files map[string]string) ([]pkiFile, error) {
	if len(files) > maxPKIFiles {
		return nil, fmt.Errorf("%d PKI files, more than the %d allowed", len(files), maxPKIFiles)
	}
	list := make([]pkiFile, 0, len(files))
	for name, p := range files {
		list = append(list, pkiFile{name, p})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	names := newPKINames()
	for _, f := range list {
		if err := names.add(f.name); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// writePKI adds the PKI files and returns their total size.
func writePKI(ctx context.Context, tw *tar.Writer, pki []pkiFile, mtime time.Time) (int64, error) {
	var total int64
	for _, p := range pki {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := writePKIFile(tw, p, mtime)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func writePKIFile(tw *tar.Writer, p pkiFile, mtime time.Time) (int64, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return 0, fmt.Errorf("read PKI file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("read PKI file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("read PKI file %s: not a regular file", p.path)
	}
	if fi.Size() > maxPKIFileSize {
		return 0, fmt.Errorf("read PKI file %s: %d bytes, more than the %d allowed", p.path, fi.Size(), maxPKIFileSize)
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     pkiPrefix + p.name,
		Mode:     int64(fi.Mode().Perm()),
		Size:     fi.Size(),
		ModTime:  mtime,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, fmt.Errorf("archive PKI file %s: %w", p.path, err)
	}
	// A file that changed size meanwhile makes tar fail here (short) or
	// stops at the declared size; either way the archive stays consistent.
	n, err := io.Copy(tw, io.LimitReader(f, fi.Size()))
	if err != nil {
		return 0, fmt.Errorf("archive PKI file %s: %w", p.path, err)
	}
	if n != fi.Size() {
		return 0, fmt.Errorf("archive PKI file %s: it shrank while being read", p.path)
	}
	return n, nil
}
