// Package diskspace measures free space the way kubox decides on it: the
// data dir's floor (below which kubox stops, see services/diskguard), the
// room a snapshot must leave, and the figures `kubox check` reports.
package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

const (
	MiB = 1 << 20
	GiB = 1 << 30

	// WALSegment covers the file etcd preallocates for its next WAL
	// segment (64 MB). etcd removes it when it stops and preallocates it
	// again when it opens its WAL.
	WALSegment = 64 * MiB
	// MinFloor is the least free space kubox runs with: a WAL write that
	// fails ends etcd, and below one segment nothing guarantees the next.
	MinFloor = WALSegment
	// MaxFloor caps the floor on big disks: 256 MiB holds a few WAL
	// segments plus the db's growth between two polls of the guard.
	MaxFloor = 256 * MiB
)

// Floor is the free space below which kubox stops (and does not start) on
// a filesystem of total bytes: 2% of it, but at least MinFloor and at most
// MaxFloor.
func Floor(total int64) int64 {
	return max(MinFloor, min(MaxFloor, total/50))
}

// Usage is the space of the filesystem holding a path.
type Usage struct {
	Path   string // the path asked about
	At     string // the nearest existing dir at or above Path, which was measured
	Device string // the filesystem's source as the mount table names it ("/dev/sda1"), or "major:minor"
	Dev    uint64 // st_dev of At
	// Free is what an unprivileged writer may still use (df's "Avail");
	// Total and Used as df shows them.
	Free, Total, Used int64
}

// PercentUsed is df's "Use%": used of what users can have (used + free).
func (u Usage) PercentUsed() float64 {
	if u.Used+u.Free <= 0 {
		return 0
	}
	return 100 * float64(u.Used) / float64(u.Used+u.Free)
}

// Floor is Floor of u's filesystem.
func (u Usage) Floor() int64 { return Floor(u.Total) }

// StartNeeds is the free space a start needs on a filesystem of total
// bytes: the floor, plus the WAL segment etcd takes back as it opens (its
// stop gave it back). With less, the start would only take kubox below
// the floor and stop it again.
func StartNeeds(total int64) int64 { return Floor(total) + WALSegment }

// Of measures the filesystem holding path; a path not created yet is
// measured at its nearest existing parent.
func Of(path string) (Usage, error) {
	u, err := Measure(path)
	if err != nil {
		return Usage{}, err
	}
	u.Device = device(u.Dev)
	return u, nil
}

// Measure is Of without the Device, which takes reading the mount table:
// cheap enough to poll.
func Measure(path string) (Usage, error) {
	at, err := existingParent(path)
	if err != nil {
		return Usage{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(at, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", at, err)
	}
	var sb unix.Stat_t
	if err := unix.Stat(at, &sb); err != nil {
		return Usage{}, fmt.Errorf("stat %s: %w", at, err)
	}
	u := FromStatfs(&st)
	u.Path, u.At, u.Dev = path, at, sb.Dev
	return u, nil
}

// FromStatfs computes the figures of a statfs result (Path, At, Device and
// Dev left empty).
func FromStatfs(st *unix.Statfs_t) Usage {
	bs := int64(st.Bsize)
	return Usage{
		Free:  int64(st.Bavail) * bs,
		Total: int64(st.Blocks) * bs,
		Used:  (int64(st.Blocks) - int64(st.Bfree)) * bs,
	}
}

func existingParent(path string) (string, error) {
	at := filepath.Clean(path)
	for {
		_, err := os.Stat(at)
		if err == nil {
			return at, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("stat %s: %w", at, err)
		}
		parent := filepath.Dir(at)
		if parent == at {
			return "", fmt.Errorf("stat %s: %w", path, err)
		}
		at = parent
	}
}

// device names the filesystem with st_dev dev as the mount table does.
func device(dev uint64) string {
	major, minor := int(unix.Major(dev)), int(unix.Minor(dev))
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return i.Major != major || i.Minor != minor, false
	})
	if err == nil {
		for _, i := range infos {
			if i.Source != "" && i.Source != "none" {
				return i.Source
			}
		}
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// SameFilesystem tells whether a and b (or their nearest existing parents)
// are on one filesystem.
func SameFilesystem(a, b string) (bool, error) {
	ua, err := Measure(a)
	if err != nil {
		return false, err
	}
	ub, err := Measure(b)
	if err != nil {
		return false, err
	}
	return ua.Dev == ub.Dev, nil
}

// Reserve is what a write into dir must leave free so the data dir keeps
// its floor: the floor when dir is on the data dir's filesystem, else 0.
func Reserve(dataDir, dir string) (int64, error) {
	ud, err := Measure(dataDir)
	if err != nil {
		return 0, err
	}
	u, err := Measure(dir)
	if err != nil {
		return 0, err
	}
	if u.Dev != ud.Dev {
		return 0, nil
	}
	return ud.Floor(), nil
}

// LowError says the data dir has less free space than kubox needs.
type LowError struct {
	Usage
	Floor int64 // below it a running kubox stops
	Need  int64 // what was needed: Floor, or StartNeeds for a start
	// Action is what kubox did: "stopped" or "not starting".
	Action string
}

func (e *LowError) Error() string {
	below := fmt.Sprintf("below the %s floor", Human(e.Floor))
	if e.Need > e.Floor {
		below = fmt.Sprintf("below the %s a start needs (the %s floor and etcd's %s WAL segment)",
			Human(e.Need), Human(e.Floor), Human(e.Need-e.Floor))
	}
	return fmt.Sprintf("data dir %s: only %s free on %s, %s: %s; free space and kubox starts again",
		e.Path, Human(e.Free), e.Device, below, e.Action)
}

// CheckStart returns a *LowError when the data dir's filesystem has less
// free than a start needs (StartNeeds).
func CheckStart(dataDir string) error {
	u, err := Of(dataDir)
	if err != nil {
		return fmt.Errorf("data dir %s: measure free space: %w", dataDir, err)
	}
	return u.CheckStart()
}

// CheckStart is CheckStart on a measured filesystem.
func (u Usage) CheckStart() error {
	if need := StartNeeds(u.Total); u.Free < need {
		return &LowError{Usage: u, Floor: u.Floor(), Need: need, Action: "not starting"}
	}
	return nil
}

// CheckFloor returns a *LowError when u has less than its floor free: a
// running kubox stops.
func (u Usage) CheckFloor() error {
	if f := u.Floor(); u.Free < f {
		return &LowError{Usage: u, Floor: f, Need: f, Action: "stopped"}
	}
	return nil
}

// Human renders a byte count with a binary unit ("12.3 MiB").
func Human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
