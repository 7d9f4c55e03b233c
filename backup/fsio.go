package backup

import (
	"io/fs"
	"os"

	"github.com/kubox/kubox/internal/fsutil"
)

const (
	modeDir  fs.FileMode = 0o700
	modeFile fs.FileMode = 0o600
	// tmpPattern names temp files in a snapshot dir. The leading dot and the
	// suffix keep them out of List, and a crash leaves only ciphertext behind.
	tmpPattern = ".kbsnap-*.tmp"
)

// publish gives the complete temp file tmp its final name without ever
// replacing an existing file, so a name collision cannot destroy an older
// snapshot or key. A hard link does that atomically; on filesystems without
// hard links (vfat on a USB stick) it falls back to check-then-rename. The
// caller fsyncs the directory.
func publish(tmp, final string) error {
	if err := fsutil.LinkNoClobber(tmp, final); err != nil {
		return err
	}
	// The file is in place (a rename may already have moved tmp); a temp
	// name that could not be removed is a leftover of ciphertext that List
	// skips, not a failure.
	os.Remove(tmp)
	return nil
}
