package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
)

// tempName matches the temp files of writeAtomic (and the writers that name
// theirs the same way: "." + base + ".tmp-" + os.CreateTemp's digits).
var tempName = regexp.MustCompile(`^\..+\.tmp-[0-9]+$`)

// IsTempName tells whether name (a base name) is one of kubox's
// temp-then-rename files: what a crash between create and rename leaves.
func IsTempName(name string) bool { return tempName.MatchString(name) }

// Swept is what SweepTemp removed.
type Swept struct {
	Files int
	Bytes int64
}

// SweepTemp removes the regular files in dir (and below it, with recursive)
// whose base name match accepts, that were last modified before before
// (the sweeping process's start: nothing it wrote itself) and that no one
// holds an flock on (a writer still running in another process). Symlinks
// are neither followed nor removed; a missing dir sweeps nothing.
func SweepTemp(dir string, recursive bool, match func(name string) bool, before time.Time) (Swept, error) {
	var s Swept
	var errs []error
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			errs = append(errs, err)
			return nil
		}
		if d.IsDir() {
			if p != dir && !recursive {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !match(d.Name()) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(before) {
			return nil
		}
		if held, err := locked(p); err != nil || held {
			return nil
		}
		if err := os.Remove(p); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove stale temp file %s: %w", p, err))
			}
			return nil
		}
		s.Files++
		s.Bytes += fi.Size()
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// locked tells whether another open file description holds an flock on p.
func locked(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return true, nil
		}
		return false, err
	}
	return false, nil // closing f drops the lock
}
