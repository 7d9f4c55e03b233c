package etcdproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startMember runs an embedded etcd member on loopback (plain HTTP: this
// test is about routing, TLS is passed through untouched).
func startMember(t *testing.T, name, cluster, state string, client, peer string) *embed.Etcd {
	t.Helper()
	c := embed.NewConfig()
	c.Name, c.Dir, c.LogLevel = name, t.TempDir(), "error"
	cu, _ := url.Parse("http://" + client)
	pu, _ := url.Parse("http://" + peer)
	c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	c.ListenMetricsUrls = nil
	c.InitialCluster, c.ClusterState = cluster, state
	e, err := embed.StartEtcd(c)
	if err != nil {
		t.Fatalf("start etcd %s: %v", name, err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatalf("etcd %s not ready", name)
	}
	return e
}

func client(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// watchWorks opens a watch, writes the key and waits for the event.
func watchWorks(ctx context.Context, cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
	defer cancel()
	wch := cli.Watch(ctx, key)
	if _, err := cli.Put(ctx, key, "v"); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	return fmt.Errorf("watch: %w", ctx.Err())
}

// TestProxyWithRealEtcd: two real etcd members, the second a learner. Why
// the proxy: a client given both members gets the learner's refusal on
// watches. With the proxy, the learner box's client writes and watches
// through the voter, and after the promotion through its own member.
func TestProxyWithRealEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two etcd members")
	}
	aClient, aPeer, bClient, bPeer := freePort(t), freePort(t), freePort(t), freePort(t)
	startMember(t, "a", "a=http://"+aPeer, "new", aClient, aPeer)
	ctx := context.Background()
	cliA := client(t, "http://"+aClient)
	added, err := cliA.MemberAddAsLearner(ctx, []string{"http://" + bPeer})
	if err != nil {
		t.Fatal(err)
	}
	b := startMember(t, "b", "a=http://"+aPeer+",b=http://"+bPeer, "existing", bClient, bPeer)

	// Without the proxy: the learner refuses streams, and a client given
	// learner and voter does not always move its watches to the voter.
	if err := watchWorks(ctx, client(t, "http://"+bClient), "k0"); err == nil || !strings.Contains(err.Error(), "not supported for learner") {
		t.Errorf("put and watch on the learner alone: %v, want %q", err, rpctypes.ErrGRPCNotSupportedForLearner)
	}
	failed := 0
	for i := 0; i < 10; i++ {
		if err := watchWorks(ctx, client(t, "http://"+bClient, "http://"+aClient), fmt.Sprintf("k%d", i)); err != nil {
			failed++
			t.Logf("client given learner+voter, try %d: %v", i, err)
		}
	}
	t.Logf("client given learner+voter: %d of 10 put+watch failed", failed)

	var logs logBuf
	p, err := New(Config{Name: "b", LocalURL: "http://" + bClient, Refresh: 50 * time.Millisecond,
		Members: func(context.Context) ([]Member, error) {
			var out []Member
			for _, m := range b.Server.Cluster().Members() {
				out = append(out, Member{Name: m.Name, Learner: m.IsLearner, ClientURLs: m.ClientURLs})
			}
			return out, nil
		},
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.Start(pctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	if err := p.Ready(pctx); err != nil {
		t.Fatal(err)
	}
	if got := p.current(); got != aClient {
		t.Fatalf("learner's backend %q, want the voter %s", got, aClient)
	}
	viaProxy := client(t, "http://"+strings.TrimPrefix(p.URL(), "https://"))
	for i := 0; i < 5; i++ {
		if err := watchWorks(ctx, viaProxy, fmt.Sprintf("learner-%d", i)); err != nil {
			t.Fatalf("through the proxy of a learner: %v", err)
		}
	}

	if _, err := cliA.MemberPromote(ctx, added.Member.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.current() != bClient && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := p.current(); got != bClient {
		t.Fatalf("after the promotion the backend is %q, want the local member %s", got, bClient)
	}
	// The same client goes on working: its connection to the voter was
	// closed and it reconnected to the local member.
	for i := 0; i < 5; i++ {
		if err := watchWorks(ctx, viaProxy, fmt.Sprintf("voter-%d", i)); err != nil {
			t.Fatalf("through the proxy after the promotion: %v", err)
		}
	}
	t.Logf("proxy log:\n%s", logs.b.String())
}
