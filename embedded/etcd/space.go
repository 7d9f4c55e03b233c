package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/dustin/go-humanize"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/storage/mvcc"

	"github.com/kubox/kubox/component"
)

// How kubox keeps etcd's database within its quota.
//
// etcd checks its quota against the database size (the high-water mark of
// bbolt's pages), which compaction never lowers: compaction only frees pages
// inside the file. Only a defragmentation (a rewrite of the file, which blocks
// the member's reads and writes while it runs) gives them back. Once a write
// would pass the quota, etcd raises the NOSPACE alarm and refuses every write
// but deletes until someone disarms it; nothing in etcd does.
//
// The space keeper is a component right after etcd:
//   - at start, before the apiserver connects (so the defragmentation blocks
//     nobody, and an apiserver whose bootstrap writes would fail on a
//     raised alarm never starts against one), it recovers from NOSPACE and
//     defragments when that pays (DefragPays);
//   - every SpaceConfig.Check (an hour), at a random phase per box so that
//     the members of a cluster seldom defragment at once, it defragments
//     when that pays;
//   - every SpaceConfig.Poll (10 s) it looks for a NOSPACE alarm of this
//     member and recovers: compaction to the current revision, a
//     defragmentation, and the disarm once the database is below
//     DisarmBelow of the quota.
//
// Each box defragments and disarms its own member only.

// SpaceConfig configures the space keeper.
type SpaceConfig struct {
	Check time.Duration // scheduled defragmentation check; default 1h
	Poll  time.Duration // NOSPACE alarm and metrics; default 10s
	Log   *slog.Logger
}

// Usage is a member's database size (what the quota is checked against),
// the part of it in use, and the quota.
type Usage struct {
	Size  int64 `json:"dbSize"`
	InUse int64 `json:"dbSizeInUse"`
	Quota int64 `json:"quota"`
}

// Free is what a defragmentation would give back.
func (u Usage) Free() int64 { return max(u.Size-u.InUse, 0) }

// Fragmentation is the free share of the database, 0 to 1.
func (u Usage) Fragmentation() float64 {
	if u.Size <= 0 {
		return 0
	}
	return float64(u.Free()) / float64(u.Size)
}

func (u Usage) String() string {
	return fmt.Sprintf("%s (%s in use, %.0f%% free) of a %s quota",
		humanize.IBytes(uint64(u.Size)), humanize.IBytes(uint64(u.InUse)), 100*u.Fragmentation(), humanize.IBytes(uint64(u.Quota)))
}

const (
	// MinDefragFree: below this, a defragmentation frees too little to be
	// worth blocking the member for.
	MinDefragFree = 32 << 20
	// DisarmBelow is the share of the quota the database must be under
	// before NOSPACE is disarmed, so that the next writes do not raise it
	// again at once; `kubox check` warns above the same share.
	DisarmBelow = 0.8
	// nospaceMinFree: under NOSPACE every freed page counts, but a
	// defragmentation that frees less than this cannot change the verdict.
	nospaceMinFree = 1 << 20
)

// DefragPays says whether a scheduled or start-time defragmentation is worth
// blocking the member for, and why: when at least MinDefragFree and half the
// file is free, or when the database nears the quota (DisarmBelow) and a
// tenth of it is free.
func DefragPays(u Usage) (bool, string) {
	free := u.Free()
	switch {
	case free >= MinDefragFree && 2*free >= u.Size:
		return true, "half the database is free"
	case NearQuota(u) && free >= nospaceMinFree && 10*free >= u.Size:
		return true, "the database nears its quota"
	}
	return false, ""
}

// NearQuota: the database is at or above DisarmBelow of its quota.
func NearQuota(u Usage) bool {
	return u.Quota > 0 && float64(u.Size) >= DisarmBelow*float64(u.Quota)
}

// CanDisarm says whether NOSPACE may be disarmed: the database is below
// DisarmBelow of the quota.
func CanDisarm(u Usage) bool { return u.Quota > 0 && !NearQuota(u) }

// Space is the space keeper component.
type Space struct {
	etcd  *Etcd
	cfg   SpaceConfig
	first component.Step
	loop  component.Goroutine

	// lastRecovery is when NOSPACE recovery last ran and the revision it
	// compacted to: it is tried again only once deletes moved the revision.
	lastRecovery    time.Time
	lastRecoveryRev int64
}

var (
	_ component.Component = (*Space)(nil)
	_ component.Readier   = (*Space)(nil)
)

// Space returns the space keeper of this member.
func (e *Etcd) Space(cfg SpaceConfig) *Space {
	if cfg.Check <= 0 {
		cfg.Check = time.Hour
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Space{etcd: e, cfg: cfg}
}

func (s *Space) Name() string { return "etcd-space" }

// Start runs the start-time check in the background (Ready waits for it),
// then the periodic one.
func (s *Space) Start(ctx context.Context) error {
	if s.etcd.e == nil {
		return errors.New("etcd is not started")
	}
	registerSpaceMetrics()
	s.first.Go(ctx, func(ctx context.Context) error {
		s.check(ctx, "start")
		return nil
	})
	s.loop.Go(ctx, "etcd space keeper", s.run)
	return nil
}

// Ready waits for the start-time check: the apiserver starts after it.
func (s *Space) Ready(ctx context.Context) error { return s.first.Wait(ctx) }

func (s *Space) Stop(ctx context.Context) error {
	return errors.Join(s.first.Stop(ctx), s.loop.Stop(ctx))
}

func (s *Space) run(ctx context.Context) error {
	if err := s.first.Wait(ctx); err != nil {
		return err
	}
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	// A random phase per box: two members seldom defragment at once.
	next := time.Now().Add(rand.N(s.cfg.Check))
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-poll.C:
			if now.After(next) {
				next = now.Add(s.cfg.Check)
				s.check(ctx, "scheduled")
			} else if s.nospace() {
				s.recover(ctx)
			}
			s.usage() // metrics
		}
	}
}

func (s *Space) server() *etcdserver.EtcdServer { return s.etcd.e.Server }

// usage reads this member's figures and publishes them as metrics.
func (s *Space) usage() Usage {
	srv := s.server()
	be := srv.Backend()
	u := Usage{Size: be.Size(), InUse: be.SizeInUse(), Quota: srv.Cfg.QuotaBackendBytes}
	alarm := 0.0
	if s.nospace() {
		alarm = 1
	}
	dbSize.Set(float64(u.Size))
	dbInUse.Set(float64(u.InUse))
	dbQuota.Set(float64(u.Quota))
	nospaceAlarm.Set(alarm)
	return u
}

// nospace reports whether this member has a NOSPACE alarm raised.
func (s *Space) nospace() bool {
	srv := s.server()
	for _, a := range srv.Alarms() {
		if a.Alarm == pb.AlarmType_NOSPACE && a.MemberID == uint64(srv.MemberID()) {
			return true
		}
	}
	return false
}

// check recovers from NOSPACE, or else defragments when that pays.
func (s *Space) check(ctx context.Context, why string) {
	if s.nospace() {
		s.recover(ctx)
		return
	}
	u := s.usage()
	if ok, reason := DefragPays(u); ok {
		s.cfg.Log.Info("defragmenting etcd ("+why+" check): "+reason, "usage", u.String())
		_, _ = s.defrag()
	}
}

// defrag defragments this member and logs one line with the sizes before
// and after and how long the member was blocked.
func (s *Space) defrag() (Usage, error) {
	before := s.usage()
	begin := time.Now()
	err := s.server().Defragment()
	took := time.Since(begin)
	after := s.usage()
	if err != nil {
		s.cfg.Log.Error("etcd defragmentation failed", "err", err, "took", took.Round(time.Millisecond))
		return after, err
	}
	s.cfg.Log.Info(fmt.Sprintf("etcd defragmented in %s: %s -> %s (%s freed)", took.Round(time.Millisecond),
		humanize.IBytes(uint64(before.Size)), humanize.IBytes(uint64(after.Size)), humanize.IBytes(uint64(max(before.Size-after.Size, 0)))))
	return after, nil
}

// Timeouts of the raft requests (compaction, disarm): they need quorum.
const (
	raftTimeout = 30 * time.Second
	// recoverEvery: a recovery that did not free enough is tried again no
	// sooner than this, and only after the revision moved (deletes).
	recoverEvery = time.Minute
)

// recover frees room under a NOSPACE alarm of this member: it compacts to
// the current revision, defragments and disarms once the database is below
// DisarmBelow of the quota. Each step is one log line.
func (s *Space) recover(ctx context.Context) {
	srv := s.server()
	rev := srv.KV().Rev()
	if !s.lastRecovery.IsZero() && (rev == s.lastRecoveryRev || time.Since(s.lastRecovery) < recoverEvery) {
		if CanDisarm(s.usage()) { // e.g. an operator's defragmentation
			s.disarm(ctx)
		}
		return
	}
	s.lastRecovery, s.lastRecoveryRev = time.Now(), rev
	s.cfg.Log.Warn("etcd raised the NOSPACE alarm (the database reached its quota; the API refuses writes): freeing room", "usage", s.usage().String())
	// The latest version of every key stays; only history goes. The
	// apiserver's own compaction (every 5 minutes, to the revision it saw 5
	// minutes before) then finds it done, and its watches that were behind
	// relist.
	cctx, cancel := context.WithTimeout(ctx, raftTimeout)
	_, err := srv.Compact(cctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	cancel()
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		s.cfg.Log.Info("etcd already compacted to the current revision", "revision", rev)
	case err != nil:
		s.cfg.Log.Error("etcd compaction failed; will retry", "revision", rev, "err", err)
		s.lastRecovery = time.Time{}
		return
	default:
		s.cfg.Log.Info("etcd compacted to the current revision", "revision", rev)
	}
	u := s.usage()
	if u.Free() >= nospaceMinFree {
		if u, err = s.defrag(); err != nil {
			s.lastRecovery = time.Time{}
			return
		}
	}
	if !CanDisarm(u) {
		s.cfg.Log.Error(fmt.Sprintf("ETCD IS OUT OF SPACE: after compaction and defragmentation the database is %s, above %.0f%% of the quota: the live objects need that much. "+
			"Delete objects (kubectl delete; deletes are accepted) and kubox disarms the alarm by itself within a minute, "+
			"or raise etcd-quota-bytes in the config file and restart kubox", u, 100*DisarmBelow))
		return
	}
	s.disarm(ctx)
}

// disarm deactivates this member's NOSPACE alarm.
func (s *Space) disarm(ctx context.Context) {
	srv := s.server()
	cctx, cancel := context.WithTimeout(ctx, raftTimeout)
	_, err := srv.Alarm(cctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: uint64(srv.MemberID()), Alarm: pb.AlarmType_NOSPACE})
	cancel()
	if err != nil {
		s.cfg.Log.Error("disarm etcd's NOSPACE alarm failed; will retry", "err", err)
		return
	}
	s.lastRecovery = time.Time{}
	s.cfg.Log.Info("disarmed etcd's NOSPACE alarm: writes are accepted again", "usage", s.usage().String())
}
