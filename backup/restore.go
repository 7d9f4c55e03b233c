package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/kubox/kubox/internal/fsutil"
)

// RestoreMarkerFile is written into a restored data dir; kubox server reads
// it on its next start to finish the restore (remove the old Node object if
// this box has another name), then renames it to RestoreMarkerFile+".done".
const RestoreMarkerFile = "restore.json"

// etcdRevisionBump is added to etcd's revision on restore, and the restored
// revision marked compacted, as the etcd and Kubernetes docs advise: any
// watcher that outlived the old cluster resyncs instead of missing changes.
const etcdRevisionBump = 1_000_000_000

// RestoreOptions says which snapshot to restore, and for which node.
type RestoreOptions struct {
	Snapshot string
	// Source, if set, is where the snapshot is read from instead of the
	// file Snapshot (which then only names it): an object store's. It is
	// streamed twice, to verify and then to extract.
	Source *Source
	// Key decrypts the snapshot; nil accepts only an unencrypted one.
	Key *Key
	// Trust says whose signature the snapshot must carry (see Verify).
	Trust Trust
	// DataDir is the kubox data dir to restore into. If it exists it is
	// renamed to DataDir.old-<unix time>, never deleted. The caller holds
	// its lock (no kubox server may be running on it).
	DataDir string
	// NodeName and PeerURL are this box's node name and etcd peer URL
	// (https://<node-ip>:<etcd-peer-port>): etcd is restored as a new
	// one-member cluster with this member.
	NodeName string
	PeerURL  string
	// Progress, if set, gets one human line per step.
	Progress func(string)
	// Warn, if set, gets lines to show even when progress is not: the line
	// of SignatureWarning when the snapshot is accepted without a checked
	// signature, and what was done about an interrupted earlier restore.
	Warn func(string)
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Header     Header // authenticated
	OldDataDir string // where the previous data dir went; "" if there was none
	Duration   time.Duration
	KeysTotal  int // etcd keys in the restored db
}

// RestoreMarker is the content of RestoreMarkerFile.
type RestoreMarker struct {
	Snapshot     string    `json:"snapshot"`
	SnapshotNode string    `json:"snapshot_node"`
	SnapshotTime time.Time `json:"snapshot_created_at"`
	ClusterID    string    `json:"cluster_id"`
	EtcdRevision int64     `json:"etcd_revision"`
	NodeName     string    `json:"node_name"`
	RestoredAt   time.Time `json:"restored_at"`
	OldDataDir   string    `json:"old_data_dir,omitempty"`
}

// Restore puts the cluster in the snapshot back into opts.DataDir. It first
// reads and checks the whole snapshot (key, authentication, digests), then
// extracts it and rebuilds etcd's data dir (which checks the etcd db's own
// hash and structure) in a staging dir beside DataDir. Only when all of that
// worked does it move the current DataDir aside and rename the staging dir
// into place, so a bad file or key leaves the disk as it was. The swap is
// journaled (see swap.go): a crash or power cut at any step is finished or
// undone by the next kubox server or kubox restore (RecoverRestore).
//
// The restored data dir holds pki/ (the snapshot's CAs, keys, service
// account keys and encryption config, plus its leaf certs, which kubox
// server re-issues if they do not fit this box), etcd/ (a new one-member
// cluster named opts.NodeName at opts.PeerURL) and RestoreMarkerFile.
func Restore(opts RestoreOptions) (RestoreResult, error) {
	begin := time.Now()
	say := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	if opts.DataDir == "" || opts.NodeName == "" || opts.PeerURL == "" {
		return RestoreResult{}, errors.New("restore: data dir, node name and peer URL are required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: resolve the data dir %s: %w", opts.DataDir, err)
	}
	if opts.Source != nil {
		// Checked by reading it below.
	} else if fi, err := os.Stat(opts.Snapshot); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: open the snapshot: %w", err)
	} else if !fi.Mode().IsRegular() {
		return RestoreResult{}, fmt.Errorf("restore: %s: %w: not a regular file", opts.Snapshot, ErrNotSnapshot)
	}

	say("verifying %s", opts.Snapshot)
	h, err := verifyOpts(opts)
	if err != nil {
		// Verify's error names the step ("verify snapshot: ...").
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if w := SignatureWarning(h, opts.Trust); w != "" && opts.Warn != nil {
		opts.Warn(w)
	}
	say("snapshot ok: %q of node %s, %s, etcd revision %d, db %s", h.Name, h.NodeName, h.CreatedAt.Format(time.RFC3339), h.EtcdRevision, HumanBytes(h.EtcdDBSize))

	// From here on the disk changes: under the lock, and journaled (see
	// swap.go), so a crash at any step is finished or undone by the next
	// kubox server or kubox restore.
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: create the data dir's parent: %w", err)
	}
	unlock, err := LockRestore(dataDir, func() { say("waiting for another restore or a starting kubox server beside %s", dataDir) })
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	defer unlock()
	if msg, err := RecoverRestore(dataDir, ForRestore); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	} else if msg != "" && opts.Warn != nil {
		opts.Warn(msg)
	}
	crash := crashHook()

	now := time.Now()
	var old string
	if _, err := os.Lstat(dataDir); err == nil {
		old = dataDir + ".old-" + strconv.FormatInt(now.Unix(), 10)
		if _, err := os.Lstat(old); err == nil {
			old = dataDir + ".old-" + strconv.FormatInt(now.UnixNano(), 10)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return RestoreResult{}, fmt.Errorf("restore: look at the current data dir: %w", err)
	}
	staging := newStagingDir(dataDir, now)
	in := &intent{Step: stepStaging, DataDir: dataDir, Staging: staging, Aside: old, Snapshot: opts.Snapshot, Started: now.UTC()}
	if err := writeIntent(in); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	crash(stepStaging)
	staged := false
	defer func() {
		if !staged {
			_ = discardStaging(in) // a leftover is swept by the next start
		}
	}()
	say("extracting into %s", staging)
	if _, err := extractOpts(opts, staging); err != nil {
		// Extract's error names the step ("extract snapshot ...: ...").
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	crash("extracted")
	if err := os.Chmod(staging, modeDir); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: restrict the staging dir: %w", err)
	}
	db := filepath.Join(staging, "etcd.db")
	mgr := snapshot.NewV3(zap.NewNop())
	st, err := mgr.Status(db)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: check the etcd db: %w: %v", ErrCorrupted, oneLine(err))
	}
	say("etcd db ok: %d keys, revision %d", st.TotalKey, st.Revision)
	say("restoring etcd as a new one-member cluster: %s at %s", opts.NodeName, opts.PeerURL)
	if err := NewEtcdDataDir(db, filepath.Join(staging, "etcd"), opts.NodeName, opts.PeerURL, false); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if err := os.Remove(db); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: remove the extracted etcd db: %w", err)
	}

	marker := RestoreMarker{
		Snapshot: opts.Snapshot, SnapshotNode: h.NodeName, SnapshotTime: h.CreatedAt,
		ClusterID: h.ClusterID, EtcdRevision: h.EtcdRevision,
		NodeName: opts.NodeName, RestoredAt: now.UTC(), OldDataDir: old,
	}
	js, err := json.MarshalIndent(marker, "", "  ")
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: encode the restore marker: %w", err)
	}
	if err := fsutil.WriteFileNew(filepath.Join(staging, RestoreMarkerFile), append(js, '\n'), modeFile); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: write the restore marker: %w", err)
	}
	if err := syncTree(staging); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: sync the staging dir: %w", err)
	}
	if err := fsutil.SyncDir(filepath.Dir(dataDir)); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	in.Step = stepStaged
	if err := writeIntent(in); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	staged = true
	crash(stepStaged)

	// The swap: the only step that changes what was there.
	if old != "" {
		say("moving the current data dir aside to %s", old)
	}
	if err := swap(in, crash); err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	return RestoreResult{Header: h, OldDataDir: old, Duration: time.Since(begin), KeysTotal: st.TotalKey}, nil
}

// NewEtcdDataDir writes outDir, a data dir of a new one-member etcd
// cluster (member name at peerURL) holding every key of the etcd database
// db. The revision is bumped and the old one marked compacted, so a watcher
// that outlived the old cluster resyncs. fromDataDir says db was copied from
// a member's data dir (member/snap/db), which carries no snapshot hash.
func NewEtcdDataDir(db, outDir, name, peerURL string, fromDataDir bool) error {
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        db,
		Name:                name,
		OutputDataDir:       outDir,
		PeerURLs:            []string{peerURL},
		InitialCluster:      name + "=" + peerURL,
		InitialClusterToken: "kubox-restore-" + strconv.FormatInt(time.Now().Unix(), 10),
		RevisionBump:        etcdRevisionBump,
		MarkCompacted:       true,
		SkipHashCheck:       fromDataDir,
	}); err != nil {
		return fmt.Errorf("write etcd data: %v", oneLine(err))
	}
	if err := os.Chmod(outDir, modeDir); err != nil {
		return fmt.Errorf("restrict the etcd data dir: %w", err)
	}
	return nil
}

// ReadRestoreMarker returns the restore marker of dataDir, or nil if there
// is none.
func ReadRestoreMarker(dataDir string) (*RestoreMarker, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, RestoreMarkerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read restore marker: %w", err)
	}
	var m RestoreMarker
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("read restore marker %s: %w", filepath.Join(dataDir, RestoreMarkerFile), err)
	}
	return &m, nil
}

// FinishRestoreMarker renames the marker to RestoreMarkerFile+".done", so
// the next start does not act on it again and the record stays.
func FinishRestoreMarker(dataDir string) error {
	p := filepath.Join(dataDir, RestoreMarkerFile)
	if err := os.Rename(p, p+".done"); err != nil {
		return fmt.Errorf("finish restore marker: %w", err)
	}
	return fsutil.SyncDir(dataDir)
}

// oneLine folds a multi-line error (bolt's integrity report) into one line.
func oneLine(err error) string {
	b := []byte(err.Error())
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}
