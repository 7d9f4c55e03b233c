package bootstrap

import (
	"fmt"
	"io/fs"
	"os"
)

const (
	modeDir     fs.FileMode = 0o700
	modePrivate fs.FileMode = 0o600
	modeCert    fs.FileMode = 0o644
)

// tightenMode removes permission bits beyond mode from an existing file, so a
// key restored with a loose umask is not left world-readable.
func tightenMode(path string, mode fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Perm()&^mode != 0 {
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("set mode of %s: %w", path, err)
		}
	}
	return nil
}
