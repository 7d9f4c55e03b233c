package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kubox/kubox/internal/fsutil"
)

const (
	modeDir  fs.FileMode = 0o700
	modeFile fs.FileMode = 0o600
	// tmpPattern names temp files in a snapshot dir. The leading dot and the
	// suffix keep them out of List, and a crash leaves only ciphertext behind.
	tmpPattern = ".kbsnap-*.tmp"
)

// ensureDir creates dir with mode 0700, or tightens an existing dir to 0700:
// the snapshot dir holds one file per backup of the whole cluster, and even
// encrypted, its listing and headers are nobody else's business.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, modeDir); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if fi.Mode().Perm()&^modeDir != 0 {
		if err := os.Chmod(dir, modeDir); err != nil {
			return fmt.Errorf("set mode of %s: %w", dir, err)
		}
	}
	return nil
}

// writeNewFile writes data to a new file at path (mode 0600) through a
// fsynced temp file, and fails with fs.ErrExist if path exists.
func writeNewFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op once published
	if err := tmp.Chmod(modeFile); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := publish(name, path); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

// publish gives the complete temp file tmp its final name without ever
// replacing an existing file, so a name collision cannot destroy an older
// snapshot or key. A hard link does that atomically; on filesystems without
// hard links (vfat on a USB stick) it falls back to check-then-rename. The
// caller fsyncs the directory.
func publish(tmp, final string) error {
	err := os.Link(tmp, final)
	if err == nil {
		// The file is in place; a temp name that could not be removed is
		// a leftover of ciphertext that List skips, not a failure.
		os.Remove(tmp)
		return nil
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", final, fs.ErrExist)
	}
	if _, serr := os.Lstat(final); serr == nil {
		return fmt.Errorf("%s: %w", final, fs.ErrExist)
	} else if !errors.Is(serr, fs.ErrNotExist) {
		return serr
	}
	return os.Rename(tmp, final)
}
