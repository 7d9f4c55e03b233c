package etcd

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
)

func loopbackURL(t *testing.T) url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// startSlowElecting starts a member in dir whose election timer is so long
// that the timer alone elects no leader for at least 10 s: etcd
// fast-forwards a lone member's timer by all but one tick, and a tick is
// 10 s here. peers, when set, are other members of a new cluster.
func startSlowElecting(t *testing.T, dir string, peers ...string) *embed.Etcd {
	t.Helper()
	c := embed.NewConfig()
	c.Name, c.Dir, c.LogLevel = "box1", dir, "error"
	c.TickMs, c.ElectionMs = 10_000, 50_000
	client, peer := loopbackURL(t), loopbackURL(t)
	c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	c.ListenMetricsUrls = nil
	c.InitialCluster = "box1=" + peer.String()
	srv, err := embed.StartEtcd(c)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	return srv
}

// A lone member, new and restarted, has a leader long before its election
// timer would give it one.
func TestCampaignAloneElectsAtOnce(t *testing.T) {
	dir := t.TempDir()
	for _, start := range []string{"new cluster", "restart"} {
		srv := startSlowElecting(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		go campaignAlone(ctx, srv.Server)
		select {
		case <-srv.Server.ReadyNotify():
		case <-time.After(5 * time.Second):
			// Not closed: etcd's Close hangs on a member that never
			// became ready.
			cancel()
			t.Fatalf("%s: no leader after 5 s (the timer alone needs 10 s or more)", start)
		}
		cancel()
		srv.Close()
	}
}

func TestAloneVoter(t *testing.T) {
	voter := func(id types.ID) *membership.Member { return &membership.Member{ID: id} }
	learner := func(id types.ID) *membership.Member {
		return &membership.Member{ID: id, RaftAttributes: membership.RaftAttributes{IsLearner: true}}
	}
	for _, tc := range []struct {
		name    string
		members []*membership.Member
		want    bool
	}{
		{"only member", []*membership.Member{voter(1)}, true},
		{"with a learner", []*membership.Member{voter(1), learner(2)}, true},
		{"with another voter", []*membership.Member{voter(1), voter(2)}, false},
		{"a learner itself", []*membership.Member{learner(1), voter(2)}, false},
		{"not a member", []*membership.Member{voter(2)}, false},
		{"no members", nil, false},
	} {
		if got := aloneVoter(tc.members, 1); got != tc.want {
			t.Errorf("%s: aloneVoter = %v, want %v", tc.name, got, tc.want)
		}
	}
}
