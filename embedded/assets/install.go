package assets

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/kubox/kubox/embedded/assets/manifest"
)

// markerPrefix starts the name of the marker file; the digest of the embedded
// set of binaries completes it, so a kubox upgrade that changes any binary
// finds no marker of its own and checks every file.
const markerPrefix = ".kubox-assets-"

// stamp is what the marker remembers of an installed file: enough that any
// ordinary rewrite, replacement or chmod of it changes at least one field.
type stamp struct {
	Size  int64       `json:"size"`
	MTime int64       `json:"mtime"` // UnixNano
	Mode  fs.FileMode `json:"mode"`
	Inode uint64      `json:"inode"`
}

func stampOf(fi fs.FileInfo) stamp {
	s := stamp{Size: fi.Size(), MTime: fi.ModTime().UnixNano(), Mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.Inode = st.Ino
	}
	return s
}

func (b bundle) install(binDir string) error {
	all, err := b.entries()
	if err != nil {
		return err
	}
	bins, err := b.binaries()
	if err != nil {
		return err
	}
	marker := filepath.Join(binDir, markerPrefix+setDigest(bins))
	if upToDate(marker, binDir, bins) {
		return nil
	}

	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("creating runtime bin directory: %w", err)
	}
	stamps := make(map[string]stamp, len(bins))
	loaded := dicts{}
	wrote := false
	for _, e := range bins {
		dst := filepath.Join(binDir, e.Name)
		same, err := hasContent(dst, e)
		if err != nil {
			return err
		}
		if same {
			if err := os.Chmod(dst, 0o755); err != nil {
				return fmt.Errorf("installing %s: %w", dst, err)
			}
		} else if err := b.writeBinary(dst, e, all, loaded); err != nil {
			return err
		} else {
			wrote = true
		}
		fi, err := os.Lstat(dst)
		if err != nil {
			return fmt.Errorf("installing %s: %w", dst, err)
		}
		stamps[e.Name] = stampOf(fi)
	}
	if wrote {
		// The decoders and the dictionary took about 60 MB more than the
		// files' own pages (measured: peak RSS 110 MB instead of 48 MB),
		// garbage now; hand it back to the OS rather than let it linger in
		// an idle kubox. Only a first start or an upgrade gets here.
		debug.FreeOSMemory()
	}
	if err := writeMarker(marker, stamps); err != nil {
		return err
	}
	return removeStaleMarkers(binDir, filepath.Base(marker))
}

// upToDate reports whether the marker exists and every binary still looks
// exactly as it did when the marker was written. It only reads the small
// marker and stats files: a warm start decompresses and hashes nothing.
func upToDate(marker, binDir string, bins []manifest.Entry) bool {
	raw, err := os.ReadFile(marker)
	if err != nil {
		return false
	}
	var stamps map[string]stamp
	if json.Unmarshal(raw, &stamps) != nil {
		return false
	}
	for _, e := range bins {
		want, ok := stamps[e.Name]
		if !ok || want.Size != e.Size {
			return false
		}
		fi, err := os.Lstat(filepath.Join(binDir, e.Name))
		if err != nil || stampOf(fi) != want {
			return false
		}
	}
	return true
}

// hasContent reports whether path is a regular file holding exactly e's
// content. A missing file is not an error: it just needs writing.
func hasContent(path string, e manifest.Entry) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking installed %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != e.Size {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("checking installed %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("checking installed %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)) == e.SHA256, nil
}

// writeBinary replaces dst with e's content atomically: readers, and a
// running runc or shim, see either the old file or the complete new one.
func (b bundle) writeBinary(dst string, e manifest.Entry, all []manifest.Entry, loaded dicts) error {
	src, err := b.openEntry(e, all, loaded)
	if err != nil {
		return err
	}
	defer src.Close()
	return writeAtomic(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	})
}

func writeMarker(path string, stamps map[string]stamp) error {
	raw, err := json.Marshal(stamps)
	if err != nil {
		return fmt.Errorf("encoding asset marker: %w", err)
	}
	return writeAtomic(path, 0o644, func(w io.Writer) error {
		_, err := w.Write(raw)
		return err
	})
}

// removeStaleMarkers deletes markers left by other builds of kubox, so that
// going back to such a build checks its files again instead of trusting an
// old marker.
func removeStaleMarkers(binDir, keep string) error {
	ents, err := os.ReadDir(binDir)
	if err != nil {
		return fmt.Errorf("listing runtime bin directory: %w", err)
	}
	for _, d := range ents {
		if d.Name() == keep || !isMarker(d.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(binDir, d.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing stale asset marker: %w", err)
		}
	}
	return nil
}

// writeAtomic writes a temporary file beside path, syncs it, renames it over
// path and syncs the directory, so a crash leaves the old file or the new one.
func writeAtomic(path string, mode fs.FileMode, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
