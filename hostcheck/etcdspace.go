package hostcheck

import "fmt"

// EtcdSpace is the etcd database's size against its quota, as the running
// member reports it or, with kubox server stopped, as its file shows it.
type EtcdSpace struct {
	Size, Quota int64
	NoSpace     bool   // the NOSPACE alarm is raised: writes are refused
	FromFile    bool   // Size is the database file's size (kubox server not running)
	Err         string // the running member did not answer
}

// etcdWarnShare: above this share of the quota, the check warns. It is the
// share below which kubox disarms NOSPACE (embedded/etcd's DisarmBelow).
const etcdWarnShare = 0.8

// EtcdSpaceCheck is the `kubox check` line for s.
func EtcdSpaceCheck(s EtcdSpace) Result {
	r := Result{Name: "etcd space"}
	if s.Err != "" {
		r.Status, r.Message, r.Fix = Warn, "etcd did not answer: "+s.Err, "see kubox server's log"
		return r
	}
	share := 0.0
	if s.Quota > 0 {
		share = float64(s.Size) / float64(s.Quota)
	}
	what := "database"
	if s.FromFile {
		what = "database file"
	}
	r.Message = fmt.Sprintf("%s %s of a %s quota (%.0f%%)", what, humanMiB(s.Size), humanMiB(s.Quota), 100*share)
	switch {
	case s.NoSpace:
		r.Status = Fail
		r.Message = "NOSPACE alarm raised, etcd refuses writes: " + r.Message
		r.Fix = `kubox server frees room and disarms by itself; if its log says "ETCD IS OUT OF SPACE", delete objects or raise etcd-quota-bytes and restart kubox (kubox etcd alarm --help)`
	case share >= etcdWarnShare:
		r.Status = Warn
		r.Fix = "delete objects you do not need (kubox defragments by itself), run kubox etcd defrag, or raise etcd-quota-bytes and restart kubox"
	default:
		r.Status = OK
	}
	return r
}

// humanMiB renders sizes of a few MiB too (humanBytes rounds to MiB).
func humanMiB(n int64) string {
	if n < GiB {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return humanBytes(n)
}
