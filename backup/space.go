package backup

import (
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/kubox/kubox/internal/diskspace"
)

// ErrNoSpace: the snapshot dir has too little free space for a snapshot;
// nothing was written.
var ErrNoSpace = errors.New("not enough free space for a snapshot")

// DefaultRetention is how many scheduled snapshots a box keeps unless told
// (k3s keeps 5 too): a day of 6-hourly snapshots and one more. Manual
// snapshots never count and are never pruned by it.
const DefaultRetention = 5

// minSpaceMargin is the least margin over the estimate: other writers on
// the same filesystem (etcd, logs) go on during a save.
const minSpaceMargin = 32 * diskspace.MiB

// SpaceEstimate is an upper bound of the size of a snapshot of an etcd db
// of dbSize bytes (the db file's size, as etcd's Status reports it) and
// PKI files of pkiSize bytes.
//
// It does not count on compression: etcd streams the whole db file, free
// pages included, and the Secrets in it are encrypted at rest, so do not
// compress. Framing adds a 512-byte tar header (and up to 511 bytes of
// padding) per 4 MiB db part and per PKI file, zstd 3 bytes per 128 KiB
// block of incompressible input, age 16 bytes per 64 KiB chunk: together
// well below the 1% and 1 MiB (the header reserve) added here.
func SpaceEstimate(dbSize, pkiSize int64) int64 {
	raw := dbSize + pkiSize
	return raw + raw/100 + diskspace.MiB
}

// SpaceMargin is what Save wants free beyond the estimate: 10% of it, at
// least 32 MiB.
func SpaceMargin(estimate int64) int64 { return max(minSpaceMargin, estimate/10) }

// checkSpace refuses a snapshot into dir that would not fit with its
// margin and keepFree bytes to spare.
func checkSpace(dir string, dbSize int64, pki map[string]string, keepFree int64) error {
	var pkiSize int64
	for _, p := range pki {
		if fi, err := os.Stat(p); err == nil {
			pkiSize += fi.Size()
		}
	}
	u, err := diskspace.Of(dir)
	if err != nil {
		return fmt.Errorf("snapshot dir %s: %w", dir, err)
	}
	est := SpaceEstimate(dbSize, pkiSize)
	margin := SpaceMargin(est)
	if u.Free >= est+margin+keepFree {
		return nil
	}
	keep := ""
	if keepFree > 0 {
		keep = fmt.Sprintf(", and the data dir on the same disk must keep %s free", diskspace.Human(keepFree))
	}
	return fmt.Errorf("%w: %s has %s free on %s; the snapshot may take %s (etcd db %s, PKI %s) plus a %s margin%s: free space there or set snapshot-dir to another disk",
		ErrNoSpace, dir, diskspace.Human(u.Free), u.Device, diskspace.Human(est), diskspace.Human(dbSize),
		diskspace.Human(pkiSize), diskspace.Human(margin), keep)
}

// tmpNamePattern matches the names os.CreateTemp gives with tmpPattern.
var tmpNamePattern = regexp.MustCompile(`^\.kbsnap-[0-9]+\.tmp$`)

// IsTempName tells whether name (a base name) is a snapshot temp file that
// Write makes, and removes unless killed.
func IsTempName(name string) bool { return tmpNamePattern.MatchString(name) }
