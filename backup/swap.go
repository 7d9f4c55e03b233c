package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/internal/fsutil"
)

// How a restore survives a power cut at any step.
//
// The data dir is swapped with two renames (the current one aside, the
// staging dir into its place). Between them there is no data dir, and a
// kubox server started then would make a brand-new cluster with new CAs.
// So the swap is journaled: an intent record beside the data dir (in its
// parent, so it outlives both renames and names one data dir only) says
// which staging dir and which aside name belong to the restore and how far
// it got. Every step is made durable (fsync of the files, then of the
// parent after each rename) before the next one starts:
//
//	intent "staging"  the staging dir is being filled: undo by removing it
//	intent "staged"   the staging dir is complete: redo the swap
//	rename data dir -> aside; fsync parent
//	rename staging  -> data dir; fsync parent
//	remove the intent; fsync parent
//
// kubox server (before it creates anything in the data dir) and kubox
// restore read the intent and finish or undo what it names (see decide).
// Staging dirs of the restore (plaintext CA keys and etcd.db) never outlive
// the next start. Both hold an flock on the parent dir meanwhile, so a
// server started during a restore waits for it instead of racing it.

// Intent steps.
const (
	stepStaging = "staging"
	stepStaged  = "staged"
)

// CrashAfterEnv names a restore step after which Restore SIGKILLs its own
// process: "staging", "extracted", "staged", "aside" or "swapped". TEST
// ONLY: the end-to-end tests use it to cut the power at each step of a
// restore; nothing else may set it.
const CrashAfterEnv = "KUBOX_TEST_RESTORE_CRASH_AFTER"

// intent is the journal record of a restore in progress.
type intent struct {
	Step     string    `json:"step"`
	DataDir  string    `json:"data_dir"`
	Staging  string    `json:"staging_dir"`
	Aside    string    `json:"aside_dir,omitempty"` // "" if there was no data dir
	Snapshot string    `json:"snapshot"`
	Started  time.Time `json:"started_at"`
}

// Names in the data dir's parent: <parent>/.<base>.restore-<nanos> is a
// staging dir, Extract's temp dirs are named after it with one more leading
// dot, and the intent is <parent>/.<base>.restore.intent (its temp files:
// ..<base>.restore.intent.tmp-*).
func stagingPrefix(dataDir string) string { return "." + filepath.Base(dataDir) + ".restore-" }

func intentPath(dataDir string) string {
	return filepath.Join(filepath.Dir(dataDir), "."+filepath.Base(dataDir)+".restore.intent")
}

func newStagingDir(dataDir string, now time.Time) string {
	return filepath.Join(filepath.Dir(dataDir), stagingPrefix(dataDir)+strconv.FormatInt(now.UnixNano(), 10))
}

// isRestoreLeftover tells whether name, an entry of the data dir's parent,
// is a staging dir, an extract temp dir or an intent temp file of a
// restore into dataDir. The intent itself is not a leftover.
func isRestoreLeftover(dataDir, name string) bool {
	p := stagingPrefix(dataDir)
	return strings.HasPrefix(name, p) || strings.HasPrefix(name, "."+p) ||
		strings.HasPrefix(name, "."+filepath.Base(intentPath(dataDir))+".tmp-")
}

// LockRestore takes an exclusive flock on the data dir's parent directory,
// which kubox restore holds from its first change on disk to its end and
// kubox server while it checks for an interrupted restore and takes the
// data dir's own lock. A lock on the directory itself leaves no file
// behind. If another holds it, waiting is called once and LockRestore
// blocks until it is free. Without a parent there is no restore to wait
// for: nothing is locked then, and nothing created.
func LockRestore(dataDir string, waiting func()) (func(), error) {
	parent := filepath.Dir(dataDir)
	f, err := os.Open(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", parent, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		if waiting != nil {
			waiting()
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", parent, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

func readIntent(dataDir string) (*intent, error) {
	p := intentPath(dataDir)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the restore journal %s: %w", p, err)
	}
	var in intent
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("the restore journal %s is damaged (%v): move it away and check %s by hand", p, err, filepath.Dir(dataDir))
	}
	// The journal names what gets renamed and removed: it must name this
	// data dir and a staging dir of its own beside it, nothing else.
	if in.DataDir != dataDir || filepath.Dir(in.Staging) != filepath.Dir(dataDir) ||
		!strings.HasPrefix(filepath.Base(in.Staging), stagingPrefix(dataDir)) ||
		(in.Aside != "" && filepath.Dir(in.Aside) != filepath.Dir(dataDir)) ||
		(in.Step != stepStaging && in.Step != stepStaged) {
		return nil, fmt.Errorf("the restore journal %s does not describe a restore into %s: move it away and check %s by hand", p, dataDir, filepath.Dir(dataDir))
	}
	return &in, nil
}

func writeIntent(in *intent) error {
	js, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the restore journal: %w", err)
	}
	if err := fsutil.WriteFileAtomic(intentPath(in.DataDir), append(js, '\n'), modeFile); err != nil {
		return fmt.Errorf("write the restore journal: %w", err)
	}
	return nil
}

func removeIntent(dataDir string) error {
	if err := os.Remove(intentPath(dataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the restore journal: %w", err)
	}
	return fsutil.SyncDir(filepath.Dir(dataDir))
}

// swap puts the complete staging dir of in (step "staged") in place of the
// data dir, moving the data dir aside first, and removes the intent. It
// picks up wherever a previous swap stopped: a staging dir already renamed
// is not renamed again. crash, if set, is called after each step.
func swap(in *intent, crash func(step string)) error {
	parent := filepath.Dir(in.DataDir)
	staged, err := fsutil.Exists(in.Staging)
	if err != nil {
		return err
	}
	if staged {
		hasData, err := fsutil.Exists(in.DataDir)
		if err != nil {
			return err
		}
		if hasData {
			if in.Aside == "" {
				return fmt.Errorf("%s appeared while a restore into it was under way: move it away or remove %s", in.DataDir, intentPath(in.DataDir))
			}
			if ok, err := fsutil.Exists(in.Aside); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("both %s and %s exist while a restore is under way: keep the one you want as %s and remove %s", in.DataDir, in.Aside, in.DataDir, intentPath(in.DataDir))
			}
			if err := os.Rename(in.DataDir, in.Aside); err != nil {
				return fmt.Errorf("move the current data dir aside: %w", err)
			}
			if err := fsutil.SyncDir(parent); err != nil {
				return err
			}
			crash("aside")
		}
		if err := os.Rename(in.Staging, in.DataDir); err != nil {
			return undoSwap(in, fmt.Errorf("put the restored data in place: %w", err))
		}
		if err := fsutil.SyncDir(parent); err != nil {
			return err
		}
		crash("swapped")
	} else if ok, err := fsutil.Exists(in.DataDir); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("a restore into %s was interrupted and both its restored data (%s) and the data dir are gone: %s", in.DataDir, in.Staging, keptHint(in))
	}
	return removeIntent(in.DataDir)
}

// undoSwap handles a failed rename of the staging dir: the previous data
// dir goes back in place and the restore is discarded. If there is no
// previous data dir to put back, or that fails, the intent stays ("staged")
// and the next start or restore tries the swap again: a missing data dir
// must never be left without a journal saying why.
func undoSwap(in *intent, err error) error {
	if in.Aside == "" {
		return err
	}
	if ok, _ := fsutil.Exists(in.Aside); !ok {
		return err
	}
	if rerr := os.Rename(in.Aside, in.DataDir); rerr != nil {
		return fmt.Errorf("%w; and moving %s back failed: %v", err, in.Aside, rerr)
	}
	if rerr := fsutil.SyncDir(filepath.Dir(in.DataDir)); rerr != nil {
		return errors.Join(err, rerr)
	}
	if rerr := discardStaging(in); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// discardStaging removes the staging dir of in and then the intent.
func discardStaging(in *intent) error {
	if err := os.RemoveAll(in.Staging); err != nil {
		return fmt.Errorf("remove the restore's staging dir: %w", err)
	}
	if err := fsutil.SyncDir(filepath.Dir(in.DataDir)); err != nil {
		return err
	}
	return removeIntent(in.DataDir)
}

func keptHint(in *intent) string {
	if in.Aside != "" {
		return "the previous data dir is " + in.Aside + "; move it back to " + in.DataDir + " or run kubox restore again"
	}
	return "run kubox restore again"
}

// RecoverFor says who recovers an interrupted restore: kubox server must
// end up with a data dir of the old or the restored cluster, or refuse;
// kubox restore is about to write a new one anyway.
type RecoverFor int

const (
	ForServer RecoverFor = iota
	ForRestore
)

// diskState is what recovery finds beside the data dir.
type diskState struct {
	intent     *intent // nil: none
	data       bool    // the data dir exists
	staging    bool    // the intent's staging dir exists
	aside      bool    // the intent's aside dir exists
	oldStaging bool    // staging dirs that no intent names (an older kubox's)
}

type action int

const (
	actNone          action = iota // nothing to finish; sweep leftovers
	actFinish                      // swap done: remove the intent
	actRollFwd                     // staging complete: do the rest of the swap
	actDiscard                     // staging incomplete: remove it, keep the data dir
	actDiscardRefuse               // as actDiscard, but keep the intent and refuse: there is no data dir
	actRefuse                      // the disk does not match any step: touch nothing
)

// decide is the recovery decision table.
func decide(s diskState, who RecoverFor) action {
	in := s.intent
	switch {
	case in == nil && !s.data && s.oldStaging && who == ForServer:
		// An older kubox (no journal) may have been cut between its two
		// renames: the staging dir may be the only copy of the restore.
		return actRefuse
	case in == nil:
		return actNone
	case in.Step == stepStaging && !s.data && who == ForServer:
		return actDiscardRefuse
	case in.Step == stepStaging:
		return actDiscard
	case !s.staging && s.data:
		return actFinish
	case !s.staging:
		return actRefuse // restored data and data dir both gone
	case s.data && (in.Aside == "" || s.aside):
		return actRefuse // a data dir that is neither the old one nor the restored one
	default:
		return actRollFwd
	}
}

// RecoverRestore finishes or undoes a restore into dataDir that a crash or
// power cut interrupted, and removes what such a restore left beside the
// data dir (staging dirs holding plaintext keys and etcd.db, temp files).
// It returns one line saying what it did ("" if there was nothing to do),
// or an error of one line if the state cannot be resolved safely; then the
// data dir must not be created. The caller holds LockRestore.
func RecoverRestore(dataDir string, who RecoverFor) (string, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", fmt.Errorf("resolve the data dir %s: %w", dataDir, err)
	}
	var s diskState
	if s.intent, err = readIntent(dataDir); err != nil {
		return "", err
	}
	if s.data, err = fsutil.Exists(dataDir); err != nil {
		return "", err
	}
	if in := s.intent; in != nil {
		if s.staging, err = fsutil.Exists(in.Staging); err != nil {
			return "", err
		}
		if in.Aside != "" {
			if s.aside, err = fsutil.Exists(in.Aside); err != nil {
				return "", err
			}
		}
	}
	leftovers, err := restoreLeftovers(dataDir, s.intent)
	if err != nil {
		return "", err
	}
	var oldStaging string
	for _, p := range leftovers {
		if strings.HasPrefix(filepath.Base(p), stagingPrefix(dataDir)) {
			s.oldStaging, oldStaging = true, p
		}
	}

	in := s.intent
	var msg string
	switch decide(s, who) {
	case actNone:
	case actFinish:
		if err := removeIntent(dataDir); err != nil {
			return "", err
		}
		msg = fmt.Sprintf("an interrupted restore of %s had already put its data in place at %s; marked it done", in.Snapshot, dataDir)
	case actRollFwd:
		if err := swap(in, func(string) {}); err != nil {
			return "", fmt.Errorf("finish the interrupted restore of %s: %w", in.Snapshot, err)
		}
		msg = fmt.Sprintf("finished an interrupted restore of %s: the restored data is now %s", in.Snapshot, dataDir)
		if in.Aside != "" && (s.data || s.aside) {
			msg += ", the previous data dir is kept at " + in.Aside
		}
	case actDiscard:
		if err := discardStaging(in); err != nil {
			return "", fmt.Errorf("undo the interrupted restore of %s: %w", in.Snapshot, err)
		}
		msg = fmt.Sprintf("undid an interrupted restore of %s (it had not finished writing its data): removed its staging dir, %s is unchanged", in.Snapshot, dataDir)
		if !s.data {
			msg = fmt.Sprintf("undid an interrupted restore of %s (it had not finished writing its data): removed its staging dir", in.Snapshot)
		}
	case actDiscardRefuse:
		// The plaintext goes; the intent stays, so every start refuses
		// until an operator decides.
		if err := os.RemoveAll(in.Staging); err != nil {
			return "", fmt.Errorf("remove the staging dir of an interrupted restore: %w", err)
		}
		if _, err := sweep(dataDir, leftovers); err != nil {
			return "", err
		}
		return "", fmt.Errorf("a restore of %s into %s was interrupted before its data was complete, and there is no data dir: run kubox restore again, or remove %s to start a new cluster", in.Snapshot, dataDir, intentPath(dataDir))
	case actRefuse:
		if in == nil {
			return "", fmt.Errorf("data dir %s is missing and an interrupted restore by an older kubox left %s: move the data you want to %s (see also %s.old-*) or remove it to start a new cluster", dataDir, oldStaging, dataDir, dataDir)
		}
		if !s.staging {
			return "", fmt.Errorf("a restore into %s was interrupted and both its restored data (%s) and the data dir are gone: %s; then remove %s", dataDir, in.Staging, keptHint(in), intentPath(dataDir))
		}
		return "", fmt.Errorf("a restore into %s was interrupted, and %s is neither the previous data dir nor the restored one (restored data: %s, previous: %s): keep the one you want as %s, then remove %s", dataDir, dataDir, in.Staging, orNone(in.Aside), dataDir, intentPath(dataDir))
	}
	n, err := sweep(dataDir, leftovers)
	if err != nil {
		return "", err
	}
	if n > 0 {
		if msg != "" {
			msg += "; "
		}
		msg += fmt.Sprintf("removed %d leftover staging dir(s) and temp file(s) of an interrupted restore beside %s", n, dataDir)
	}
	return msg, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// restoreLeftovers lists the restore leftovers beside dataDir, except the
// staging dir that the intent names.
func restoreLeftovers(dataDir string, in *intent) ([]string, error) {
	parent := filepath.Dir(dataDir)
	des, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for leftovers of a restore: %w", err)
	}
	var out []string
	for _, de := range des {
		p := filepath.Join(parent, de.Name())
		if isRestoreLeftover(dataDir, de.Name()) && (in == nil || p != in.Staging) {
			out = append(out, p)
		}
	}
	return out, nil
}

// sweep removes leftovers (re-checking each still exists) and returns how
// many it removed.
func sweep(dataDir string, leftovers []string) (int, error) {
	n := 0
	for _, p := range leftovers {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return n, fmt.Errorf("remove %s, left by an interrupted restore: %w", p, err)
		}
		n++
	}
	if n > 0 {
		if err := fsutil.SyncDir(filepath.Dir(dataDir)); err != nil {
			return n, err
		}
	}
	return n, nil
}

// syncTree fsyncs every file and directory under dir, so a staging dir is
// wholly on disk before the intent says it is complete.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
		return nil
	})
}

// crashHook returns what Restore calls after each step: a SIGKILL of this
// process after the step named by CrashAfterEnv (test only), else nothing.
func crashHook() func(step string) {
	at := os.Getenv(CrashAfterEnv)
	if at == "" {
		return func(string) {}
	}
	return func(step string) {
		if step == at {
			_ = unix.Kill(os.Getpid(), unix.SIGKILL)
			select {} // the signal is on its way; never go on to the next step
		}
	}
}
