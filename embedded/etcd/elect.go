package etcd

import (
	"context"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/raft/v3/raftpb"
)

// A lone voter still waits out its randomized election timeout before it
// elects itself: etcd fast-forwards all but one tick of it, which leaves
// 0.1-1.1 s (1 s timeout, 100 ms ticks) on every start of a one-box
// cluster. With no other voter there is nobody to hear from, so
// campaignAlone asks raft to campaign at once, the way a leadership
// transfer does (MsgTimeoutNow; raft exports no Campaign through etcd).
// The outcome is the one the timer would bring, sooner.
const (
	// campaignRetry is how often campaignAlone asks again: raft refuses
	// while configuration changes are committed but not yet applied (the
	// bootstrap entry of a new cluster), which takes milliseconds.
	campaignRetry = 20 * time.Millisecond
	// campaignFor bounds the asking; raft's own timer elects after that.
	campaignFor = 2 * time.Second
)

// aloneVoter says whether self is the only voter among members (learners
// do not vote).
func aloneVoter(members []*membership.Member, self types.ID) bool {
	voters := 0
	for _, m := range members {
		if m.IsLearner {
			continue
		}
		if m.ID != self {
			return false
		}
		voters++
	}
	return voters == 1
}

// campaignAlone makes s, when it is its cluster's only voter, campaign
// without waiting for its election timeout. It returns when s has a
// leader, when s is not alone, or after campaignFor.
func campaignAlone(ctx context.Context, s *etcdserver.EtcdServer) {
	// The membership s has applied: a restarted member's own view.
	if !aloneVoter(s.Cluster().Members(), s.MemberID()) {
		return
	}
	self := uint64(s.MemberID())
	ctx, cancel := context.WithTimeout(ctx, campaignFor)
	defer cancel()
	tick := time.NewTicker(campaignRetry)
	defer tick.Stop()
	for s.Leader() == 0 {
		// Asked before the pending entries are applied, raft only logs a
		// refusal; wait for them instead.
		if s.AppliedIndex() >= s.CommittedIndex() {
			// Term 0: a local message, which raft takes at any term.
			msg := raftpb.Message{Type: raftpb.MsgTimeoutNow, From: self, To: self}
			if err := s.Process(ctx, msg); err != nil {
				return
			}
		}
		select {
		case <-tick.C:
		case <-s.StoppingNotify():
			return
		case <-ctx.Done():
			return
		}
	}
}
