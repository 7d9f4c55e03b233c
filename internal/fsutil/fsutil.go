// Package fsutil writes files the way kubox must: never half-written, never
// clobbering what must not be replaced, and never deleting a user's data.
// Every write goes to a temp file in the same directory, is fsynced, and is
// moved into place; then the directory is fsynced.
package fsutil

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// WriteFileAtomic replaces path with data, with the given mode. The parent
// directory must exist.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return writeAtomic(path, data, mode, true)
}

// WriteFileNew writes a file that must not exist yet. It fails with an error
// matching fs.ErrExist if path exists or appears meanwhile.
func WriteFileNew(path string, data []byte, mode fs.FileMode) error {
	return writeAtomic(path, data, mode, false)
}

// WriteFileIfChanged writes like WriteFileAtomic (creating the parent dir
// 0700) and reports whether it wrote. A file that already holds data is left
// alone, same mtime, only given mode if its mode differs.
func WriteFileIfChanged(path string, data []byte, mode fs.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, data):
		fi, err := os.Stat(path)
		if err != nil {
			return false, fmt.Errorf("stat %s: %w", path, err)
		}
		if fi.Mode().Perm() != mode.Perm() {
			if err := os.Chmod(path, mode); err != nil {
				return false, fmt.Errorf("set mode of %s: %w", path, err)
			}
		}
		return false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, WriteFileAtomic(path, data, mode)
}

func writeAtomic(path string, data []byte, mode fs.FileMode, overwrite bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	// Chmod before writing so the content is never readable with the wrong mode.
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: set mode: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if overwrite {
		err = os.Rename(tmpName, path)
	} else {
		err = LinkNoClobber(tmpName, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !overwrite {
		// The data now lives under path; the temp name is just a second link.
		_ = os.Remove(tmpName)
	}
	return SyncDir(dir)
}

// LinkNoClobber makes newPath name the same file as oldPath, failing with an
// error matching fs.ErrExist if newPath exists. A hard link is atomic and never replaces; file systems
// without hard links fall back to check-then-rename.
func LinkNoClobber(oldPath, newPath string) error {
	err := os.Link(oldPath, newPath)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	ok, serr := Exists(newPath)
	if serr != nil {
		return serr
	}
	if ok {
		return fmt.Errorf("%s: %w", newPath, fs.ErrExist)
	}
	return os.Rename(oldPath, newPath)
}

// SyncDir fsyncs a directory so a rename or new entry in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Exists reports whether path exists; errors other than "not found" are
// returned so a permission problem is not mistaken for a missing file.
func Exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat %s: %w", path, err)
}

// EnsureDir creates dir (and parents) and forces mode on dir itself, so a
// directory left with looser permissions is tightened.
func EnsureDir(dir string, mode fs.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if fi.Mode().Perm() != mode {
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("set mode of %s: %w", dir, err)
		}
	}
	return nil
}

// MoveAside renames path to path.old-<unix time> (adding a counter if that
// name is taken) and returns the new name. Old material is kept, never
// deleted, so an operator can always go back.
func MoveAside(path string, now time.Time) (string, error) {
	base := path + ".old-" + strconv.FormatInt(now.Unix(), 10)
	target := base
	for i := 1; ; i++ {
		err := renameNoClobber(path, target)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("move %s aside: %w", path, err)
		}
		target = base + "-" + strconv.Itoa(i)
	}
	// linkNoClobber may have linked rather than renamed: drop the old name.
	if ok, err := Exists(path); err != nil {
		return "", err
	} else if ok {
		if err := os.Remove(path); err != nil {
			return "", fmt.Errorf("move %s aside: %w", path, err)
		}
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return target, nil
}

// renameNoClobber renames oldPath to newPath unless newPath exists. A real
// rename matters to watchers: a process watching oldPath with inotify (the
// apiserver's and kubelet's certificate file watchers) sees the file move
// away and watches the new file at that path, whereas link-then-unlink
// leaves it watching the old inode forever. File systems without
// RENAME_NOREPLACE fall back to linkNoClobber.
func renameNoClobber(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%s: %w", newPath, fs.ErrExist)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		return LinkNoClobber(oldPath, newPath)
	}
	return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: err}
}
