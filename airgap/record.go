package airgap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kubox/kubox/internal/fsutil"
)

// Record is the file (in the data dir) that lists the bundles imported on
// this node, so a start with the same bundles present only reads their
// manifests. The server and "kubox airgap import" both update it, under a
// lock.
type Record struct {
	Path string
}

// RecordEntry is one imported bundle.
type RecordEntry struct {
	ID         digest.Digest `json:"id"`
	File       string        `json:"file"`
	Images     []string      `json:"images"`
	ImportedAt time.Time     `json:"importedAt"`
}

type recordFile struct {
	Bundles []RecordEntry `json:"bundles"`
}

// DefaultRecordPath is where a node keeps its record.
func DefaultRecordPath(dataDir string) string {
	return filepath.Join(dataDir, "airgap", "imported.json")
}

// Load returns the recorded bundles by ID; a missing file is an empty record.
func (r Record) Load() (map[digest.Digest]RecordEntry, error) {
	data, err := os.ReadFile(r.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[digest.Digest]RecordEntry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read import record: %w", err)
	}
	var f recordFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("import record %s is corrupt (%v): it is moved aside at the next import, and bundles are imported again", r.Path, err)
	}
	m := make(map[digest.Digest]RecordEntry, len(f.Bundles))
	for _, e := range f.Bundles {
		m[e.ID] = e
	}
	return m, nil
}

// Add records an imported bundle (replacing an entry with the same ID).
func (r Record) Add(e RecordEntry) error {
	if err := os.MkdirAll(filepath.Dir(r.Path), 0o700); err != nil {
		return fmt.Errorf("record import: %w", err)
	}
	lock, err := os.OpenFile(r.Path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("record import: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("record import: lock: %w", err)
	}
	m, err := r.Load()
	if err != nil {
		// Only a cache of what is in containerd: keep the bad file for
		// a look, start a new one.
		if _, merr := fsutil.MoveAside(r.Path, time.Now()); merr != nil {
			return fmt.Errorf("%w; %w", err, merr)
		}
		m = map[digest.Digest]RecordEntry{}
	}
	var f recordFile
	for id, old := range m {
		if id != e.ID {
			f.Bundles = append(f.Bundles, old)
		}
	}
	f.Bundles = append(f.Bundles, e)
	slices.SortFunc(f.Bundles, func(a, b RecordEntry) int { return a.ImportedAt.Compare(b.ImportedAt) })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(r.Path, append(data, '\n'), 0o600)
}
