package backup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kubox/kubox/internal/fsutil"
)

// Extract decrypts and checks the snapshot at path (see Verify for key and
// trust) and
// puts its content in targetDir:
//
//	targetDir/etcd.db       the etcd snapshot (0600)
//	targetDir/pki/<name>    the PKI files (0600, or 0644 if they were readable by others)
//
// targetDir must not exist, or be an empty directory; its parent must exist.
// Extract writes into a temp directory beside targetDir and renames it into
// place only once the whole file has been verified, so a bad snapshot leaves
// the disk as it was.
func Extract(path string, key *Key, trust Trust, targetDir string) (Header, error) {
	target := filepath.Clean(targetDir)
	if err := checkTarget(target); err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return Header{}, fmt.Errorf("extract snapshot: %w", err)
	}
	defer f.Close()
	return extractFrom(f, path, key, trust, target)
}

// extractFrom is Extract reading the snapshot from r; path names it in
// errors, target is clean and checked.
func extractFrom(f io.Reader, path string, key *Key, trust Trust, target string) (Header, error) {
	parent := filepath.Dir(target)
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(target)+".extract-*")
	if err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	ds := &dirSink{dir: tmp, dirs: map[string]bool{tmp: true}}
	h, err := readSnapshot(f, key, trust, ds)
	if cerr := ds.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	for d := range ds.dirs {
		if err := fsutil.SyncDir(d); err != nil {
			return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
		}
	}
	// os.Rename refuses to replace a directory; os.Remove takes away an
	// empty target only, so a target filled meanwhile is not touched.
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	done = true
	if err := fsutil.SyncDir(parent); err != nil {
		return Header{}, fmt.Errorf("extract snapshot %s: %w", path, err)
	}
	return h, nil
}

// checkTarget fails early, before any decryption work, if target is in use
// or cannot be created.
func checkTarget(target string) error {
	parent := filepath.Dir(target)
	if fi, err := os.Stat(parent); err != nil {
		return fmt.Errorf("target parent: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("target parent %s is not a directory", parent)
	}
	entries, err := os.ReadDir(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("target %s: %w", target, err)
	case len(entries) > 0:
		return fmt.Errorf("target %s: %w and is not empty", target, fs.ErrExist)
	}
	return nil
}

// dirSink writes a snapshot's content under dir. Files are created with
// O_EXCL in a fresh directory, and names were checked by the reader, so
// nothing lands outside dir.
type dirSink struct {
	dir  string
	db   *os.File
	dirs map[string]bool // directories to fsync
}

func (d *dirSink) pkiFile(name string, mode fs.FileMode, r io.Reader) error {
	p := filepath.Join(d.dir, "pki", filepath.FromSlash(name))
	if err := d.mkdirs(filepath.Dir(p)); err != nil {
		return err
	}
	// Keys stay 0600; certificates that were world-readable stay 0644.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode&0o644|modeFile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (d *dirSink) dbPart(r io.Reader) error {
	if d.db == nil {
		f, err := os.OpenFile(filepath.Join(d.dir, "etcd.db"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, modeFile)
		if err != nil {
			return err
		}
		d.db = f
	}
	_, err := io.Copy(d.db, r)
	return err
}

// mkdirs creates dir and its missing parents under d.dir, remembering them
// for the final fsync.
func (d *dirSink) mkdirs(dir string) error {
	if d.dirs[dir] {
		return nil
	}
	if err := d.mkdirs(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, modeDir); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	d.dirs[dir] = true
	return nil
}

// close syncs and closes the db file.
func (d *dirSink) close() error {
	if d.db == nil {
		return nil
	}
	err := d.db.Sync()
	if cerr := d.db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write etcd.db: %w", err)
	}
	return nil
}
