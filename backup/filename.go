package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
)

// namePattern limits snapshot names to what is safe in a file name.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// publishSnapshot renames the finished temp file to its final name, adding
// a -2, -3, ... suffix when a snapshot of the same name, node and second
// already exists.
func publishSnapshot(tmp, dir string, h Header) (string, error) {
	base := baseName(h)
	for i := 1; i <= 100; i++ {
		name := base + Extension
		if i > 1 {
			name = fmt.Sprintf("%s-%d%s", base, i, Extension)
		}
		final := filepath.Join(dir, name)
		err := publish(tmp, final)
		if err == nil {
			return final, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s%s: too many snapshots with that name", filepath.Join(dir, base), Extension)
}

// baseName is a snapshot's file name without the extension:
// <name>-<node>-<UTC time>.
func baseName(h Header) string {
	return fmt.Sprintf("%s-%s-%s", h.Name, fileSafe(h.NodeName), h.CreatedAt.Format("20060102T150405Z"))
}

// fileSafe maps a node name to file-name-safe characters and a bounded
// length; the header keeps the real name.
func fileSafe(s string) string {
	b := []byte(s)
	if len(b) > 63 {
		b = b[:63]
	}
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
