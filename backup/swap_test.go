package backup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDecide is the recovery decision table: every intent step against the
// data dir present or missing (and the staging and aside dirs present or
// not where the step allows both), for kubox server and kubox restore.
func TestDecide(t *testing.T) {
	staging := &intent{Step: stepStaging, Aside: "/x/data.old-1"}
	stagingFresh := &intent{Step: stepStaging} // no data dir when the restore began
	staged := &intent{Step: stepStaged, Aside: "/x/data.old-1"}
	stagedFresh := &intent{Step: stepStaged}
	for _, c := range []struct {
		name            string
		s               diskState
		server, restore action
	}{
		// No journal.
		{"none, data", diskState{data: true}, actNone, actNone},
		{"none, data, old staging", diskState{data: true, oldStaging: true}, actNone, actNone},
		{"none, no data (new box)", diskState{}, actNone, actNone},
		{"none, no data, old staging (older kubox cut between renames)", diskState{oldStaging: true}, actRefuse, actNone},
		// Cut while the staging dir was being filled: the old data stays.
		{"staging, data", diskState{intent: staging, data: true, staging: true}, actDiscard, actDiscard},
		{"staging, data, staging not yet created", diskState{intent: staging, data: true}, actDiscard, actDiscard},
		{"staging, no data", diskState{intent: staging, staging: true}, actDiscardRefuse, actDiscard},
		{"staging, no data (new box)", diskState{intent: stagingFresh, staging: true}, actDiscardRefuse, actDiscard},
		// Staged: the swap is redone.
		{"staged, data is the old one", diskState{intent: staged, data: true, staging: true}, actRollFwd, actRollFwd},
		{"staged, no data, aside done", diskState{intent: staged, staging: true, aside: true}, actRollFwd, actRollFwd},
		{"staged, no data (new box)", diskState{intent: stagedFresh, staging: true}, actRollFwd, actRollFwd},
		{"staged, no data, aside gone", diskState{intent: staged, staging: true}, actRollFwd, actRollFwd},
		{"staged, data and aside both there", diskState{intent: staged, data: true, staging: true, aside: true}, actRefuse, actRefuse},
		{"staged, a data dir appeared on a new box", diskState{intent: stagedFresh, data: true, staging: true}, actRefuse, actRefuse},
		// Swapped: only the journal is left to remove.
		{"swapped, data", diskState{intent: staged, data: true, aside: true}, actFinish, actFinish},
		{"swapped, data (new box)", diskState{intent: stagedFresh, data: true}, actFinish, actFinish},
		{"swapped, no data", diskState{intent: staged, aside: true}, actRefuse, actRefuse},
		{"swapped, no data (new box)", diskState{intent: stagedFresh}, actRefuse, actRefuse},
	} {
		if got := decide(c.s, ForServer); got != c.server {
			t.Errorf("%s: server: action %d, want %d", c.name, got, c.server)
		}
		if got := decide(c.s, ForRestore); got != c.restore {
			t.Errorf("%s: restore: action %d, want %d", c.name, got, c.restore)
		}
	}
}

// swapFixture lays out, in a temp dir, what a restore cut off at a given
// step leaves: the old data dir (file "old"), the staging dir (file
// "restored" and a plaintext key) and the journal.
type swapFixture struct {
	parent, data, staging, aside string
}

func newSwapFixture(t *testing.T) *swapFixture {
	t.Helper()
	parent := t.TempDir()
	data := filepath.Join(parent, "data")
	return &swapFixture{parent: parent, data: data,
		staging: newStagingDir(data, time.Unix(1, 2)), aside: data + ".old-1"}
}

func (f *swapFixture) dir(t *testing.T, dir, marker string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, marker), []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pki", "ca.key"), []byte("PRIVATE KEY "+marker), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *swapFixture) intent(t *testing.T, step, aside string) *intent {
	t.Helper()
	in := &intent{Step: step, DataDir: f.data, Staging: f.staging, Aside: aside, Snapshot: "/snap/s.kbsnap", Started: time.Unix(1, 0)}
	if err := writeIntent(in); err != nil {
		t.Fatal(err)
	}
	return in
}

// holds says which marker file the data dir holds ("" if it is missing).
func (f *swapFixture) holds(t *testing.T, dir string) string {
	t.Helper()
	for _, m := range []string{"old", "restored"} {
		if _, err := os.Stat(filepath.Join(dir, m)); err == nil {
			return m
		}
	}
	if _, err := os.Stat(dir); err == nil {
		return "something else"
	}
	return ""
}

func (f *swapFixture) names(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(f.parent)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// TestRecoverRestore lays out the disk as a restore cut off after each
// step leaves it, runs the recovery and checks what is left: the old data
// or the restored data in place, never no data dir without a refusal, and
// no staging dir or journal left behind.
func TestRecoverRestore(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, f *swapFixture)
		who   RecoverFor
		// want: what the data dir holds after ("" missing), what the aside
		// dir holds, and a part of the line or of the refusal.
		want, wantAside, line, refusal string
		keepIntent                     bool
	}{
		{name: "nothing to do", setup: func(t *testing.T, f *swapFixture) { f.dir(t, f.data, "old") }, want: "old"},
		{name: "new box", setup: func(t *testing.T, f *swapFixture) {}},
		{name: "new box with aside dirs of finished restores", setup: func(t *testing.T, f *swapFixture) { f.dir(t, f.aside, "old") }, wantAside: "old"},
		{name: "cut after the intent", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.intent(t, stepStaging, f.aside)
		}, want: "old", line: "undid an interrupted restore"},
		{name: "cut while extracting", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.intent(t, stepStaging, f.aside)
			f.dir(t, filepath.Join(f.parent, "."+filepath.Base(f.staging)+".extract-123"), "restored")
		}, want: "old", line: "removed 1 leftover"},
		{name: "cut after extracting", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.intent(t, stepStaging, f.aside)
			f.dir(t, f.staging, "restored")
		}, want: "old", line: "removed its staging dir, "},
		{name: "cut after extracting, restore", who: ForRestore, setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.intent(t, stepStaging, f.aside)
			f.dir(t, f.staging, "restored")
		}, want: "old", line: "undid"},
		{name: "cut after extracting on a new box", setup: func(t *testing.T, f *swapFixture) {
			f.intent(t, stepStaging, "")
			f.dir(t, f.staging, "restored")
		}, refusal: "run kubox restore again, or remove", keepIntent: true},
		{name: "cut after extracting on a new box, restore", who: ForRestore, setup: func(t *testing.T, f *swapFixture) {
			f.intent(t, stepStaging, "")
			f.dir(t, f.staging, "restored")
		}, line: "undid"},
		{name: "cut after staged", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.dir(t, f.staging, "restored")
			f.intent(t, stepStaged, f.aside)
		}, want: "restored", wantAside: "old", line: "finished an interrupted restore"},
		{name: "cut after staged, restore", who: ForRestore, setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.dir(t, f.staging, "restored")
			f.intent(t, stepStaged, f.aside)
		}, want: "restored", wantAside: "old", line: "finished"},
		{name: "cut after staged on a new box", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.staging, "restored")
			f.intent(t, stepStaged, "")
		}, want: "restored", line: "finished"},
		{name: "cut after moving aside", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.dir(t, f.staging, "restored")
			f.intent(t, stepStaged, f.aside)
			if err := os.WriteFile(filepath.Join(f.parent, "..data.restore.intent.tmp-99"), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: "restored", wantAside: "old", line: "kept at " + "DATA.old-1; removed 1 leftover"},
		{name: "cut after swapping", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.dir(t, f.data, "restored")
			f.intent(t, stepStaged, f.aside)
		}, want: "restored", wantAside: "old", line: "had already put its data in place"},
		{name: "swapped, then the data dir vanished", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.intent(t, stepStaged, f.aside)
		}, wantAside: "old", refusal: "move it back to", keepIntent: true},
		{name: "staged, but both the old and another data dir exist", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.dir(t, f.data, "other")
			f.dir(t, f.staging, "restored")
			f.intent(t, stepStaged, f.aside)
		}, want: "something else", wantAside: "old", refusal: "neither the previous data dir nor the restored one", keepIntent: true},
		{name: "older kubox cut between its renames", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.dir(t, f.staging, "restored")
		}, wantAside: "old", refusal: "an older kubox left"},
		{name: "older kubox cut between its renames, restore", who: ForRestore, setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.aside, "old")
			f.dir(t, f.staging, "restored")
		}, wantAside: "old", line: "removed 1 leftover"},
		{name: "older kubox's staging dirs beside a data dir", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.dir(t, f.staging, "restored")
			f.dir(t, f.staging+"7", "restored")
		}, want: "old", line: "removed 2 leftover"},
		{name: "damaged journal", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			f.dir(t, f.staging, "restored")
			if err := os.WriteFile(intentPath(f.data), []byte("{\"step\":"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: "old", refusal: "is damaged", keepIntent: true},
		{name: "journal naming another dir", setup: func(t *testing.T, f *swapFixture) {
			f.dir(t, f.data, "old")
			in := f.intent(t, stepStaging, "")
			in.Staging = "/etc"
			if err := writeIntent(in); err != nil {
				t.Fatal(err)
			}
		}, want: "old", refusal: "does not describe a restore into", keepIntent: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newSwapFixture(t)
			c.setup(t, f)
			line, err := RecoverRestore(f.data, c.who)
			if c.refusal != "" {
				if err == nil || !strings.Contains(err.Error(), c.refusal) || strings.Contains(err.Error(), "\n") {
					t.Errorf("got line %q, error %v; want one line refusing with %q", line, err, c.refusal)
				}
			} else if err != nil {
				t.Fatalf("recover: %v", err)
			}
			wantLine := strings.ReplaceAll(c.line, "DATA", f.data)
			if c.refusal == "" && (c.line == "") != (line == "") || !strings.Contains(line, wantLine) || strings.Contains(line, "\n") {
				t.Errorf("line %q, want one line with %q", line, wantLine)
			}
			if got := f.holds(t, f.data); got != c.want {
				t.Errorf("data dir holds %q, want %q", got, c.want)
			}
			if got := f.holds(t, f.aside); got != c.wantAside {
				t.Errorf("aside dir holds %q, want %q", got, c.wantAside)
			}
			names := f.names(t)
			if _, err := os.Stat(intentPath(f.data)); c.keepIntent != (err == nil) {
				t.Errorf("journal kept: %v, want %v (%v)", err == nil, c.keepIntent, names)
			}
			// The staging dir may only survive a refusal that could not
			// tell which data to keep.
			leftover := slices.ContainsFunc(names, func(n string) bool { return isRestoreLeftover(f.data, n) })
			mayKeep := c.refusal != "" && c.refusal != "run kubox restore again, or remove"
			if leftover && !mayKeep {
				t.Errorf("restore leftovers remain: %v", names)
			}
			if c.refusal == "" {
				// Recovery is done: running it again changes nothing.
				if line, err := RecoverRestore(f.data, ForServer); err != nil || line != "" {
					t.Errorf("second recovery: %q, %v", line, err)
				}
			}
		})
	}
}

// TestSwapRollsBackOnFailure: a staging dir that cannot be renamed into
// place puts the old data dir back and discards the restore.
func TestSwapRollsBackOnFailure(t *testing.T) {
	f := newSwapFixture(t)
	f.dir(t, f.data, "old")
	f.dir(t, f.staging, "restored")
	in := f.intent(t, stepStaged, f.aside)
	// A rename cannot put a directory over a non-empty one: make the
	// second rename fail by filling the data dir's name right after the
	// first one.
	err := swap(in, func(step string) {
		if step == "aside" {
			f.dir(t, f.data, "other")
		}
	})
	if err == nil {
		t.Fatal("swap over an occupied data dir succeeded")
	}
	// The data dir name was taken, so the old data could not go back: the
	// journal stays for the operator, and nothing was deleted.
	if got := f.holds(t, f.aside); got != "old" {
		t.Errorf("aside holds %q", got)
	}
	if _, err := os.Stat(intentPath(f.data)); err != nil {
		t.Errorf("journal removed: %v", err)
	}
	if _, err := os.Stat(f.staging); err != nil {
		t.Errorf("staging removed: %v", err)
	}
}

// TestLockRestore: a second holder waits until the first lets go.
func TestLockRestore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing", "data")
	if u, err := LockRestore(missing, nil); err != nil {
		t.Fatal(err)
	} else {
		u()
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LockRestore created the parent: %v", err)
	}
	data := filepath.Join(t.TempDir(), "data")
	unlock, err := LockRestore(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		u, err := LockRestore(data, func() { close(waited) })
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("second LockRestore did not wait")
	}
	unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LockRestore created the data dir: %v", err)
	}
}
