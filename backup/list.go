package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// Entry is one snapshot file.
type Entry struct {
	Path   string
	Header Header // from ReadHeader: not authenticated
	Size   int64  // file size in bytes
	// Err says why the header could not be read; Header is zero then.
	Err error
}

// List returns the snapshots (*.kbsnap files) in dir, newest first by
// creation time. Temp files of writes in progress are skipped. A file whose
// header cannot be read is listed with Err set (sorted by its modification
// time) rather than failing the whole listing: one bad file must not hide
// the good ones. A missing dir lists as empty.
func List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", dir, err)
	}
	var entries []Entry
	when := map[string]time.Time{}
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, Extension) || strings.HasPrefix(name, ".") || de.IsDir() {
			continue
		}
		p := filepath.Join(dir, name)
		h, size, err := ReadHeader(p)
		e := Entry{Path: p, Header: h, Size: size, Err: err}
		when[p] = h.CreatedAt
		if err != nil {
			if fi, serr := de.Info(); serr == nil {
				e.Size, when[p] = fi.Size(), fi.ModTime()
			}
		}
		entries = append(entries, e)
	}
	sort.SliceStable(entries, func(i, j int) bool {
		ti, tj := when[entries[i].Path], when[entries[j].Path]
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return entries[i].Path > entries[j].Path
	})
	return entries, nil
}

// Prune applies retention to dir: it keeps the newest keep snapshots and
// removes the older ones. With scheduledOnly, only scheduled snapshots count
// and are removed; manual ones are kept until removed by hand. Files whose
// header cannot be read are never removed. It returns the removed paths, also
// when it fails part way.
func Prune(dir string, keep int, scheduledOnly bool) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune snapshots in %s: keep must be at least 1, got %d", dir, keep)
	}
	entries, err := List(dir)
	if err != nil {
		return nil, fmt.Errorf("prune snapshots: %w", err)
	}
	var removed []string
	kept := 0
	for _, e := range entries {
		if e.Err != nil || (scheduledOnly && !e.Header.Scheduled) {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		if err := os.Remove(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
		removed = append(removed, e.Path)
	}
	if len(removed) > 0 {
		if err := fsutil.SyncDir(dir); err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
	}
	return removed, nil
}
