package etcd

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// replacedTimeout bounds the replacement check at start: a member that
// answers does so in milliseconds; one that is down must not hold the
// start up for long.
const replacedTimeout = 2 * time.Second

// replacedRecheck is how often a running member asks again: a box started
// while it could not reach the box that replaced it learns it once the
// network heals, and stops, instead of serving on.
const replacedRecheck = 30 * time.Second

// watchReplaced sends the first checkReplaced result to e.replaced (Ready
// waits for it), then checks again every replacedRecheck until ctx ends
// or etcd stops, and fails the member when it was replaced.
func (e *Etcd) watchReplaced(ctx context.Context, srv *embed.Etcd) {
	err := e.checkReplaced(ctx, srv)
	e.replaced <- err
	if err != nil {
		return
	}
	tick := time.NewTicker(replacedRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-srv.Server.StopNotify():
			return
		case <-tick.C:
		}
		if err := e.checkReplaced(ctx, srv); err != nil {
			select {
			case e.failed <- err:
			default: // already failing for another reason
			}
			return
		}
	}
}

// checkReplaced asks the other members this one knows of which cluster
// they serve. `kubox etcd recover` on a surviving box makes its member a
// new one-member cluster (another cluster ID) from its own data; a box it
// replaced, started again with its stale data, may be the only voter in
// its own view and would elect itself and serve a second copy of the
// cluster (split brain). Its peers then answer with the other cluster ID
// (a learner answers Status too), and it returns ErrRemoved before
// Ready. Peers that do not answer prove nothing: a box started while the
// others are down serves, as it must.
func (e *Etcd) checkReplaced(ctx context.Context, srv *embed.Etcd) error {
	cluster, self := srv.Server.Cluster(), srv.Server.MemberID()
	var endpoints []string
	for _, m := range cluster.Members() {
		if m.ID != self {
			endpoints = append(endpoints, m.ClientURLs...)
		}
	}
	if len(endpoints) == 0 || e.cfg.ClientCert == "" {
		return nil
	}
	tlsCfg, err := (&transport.TLSInfo{CertFile: e.cfg.ClientCert, KeyFile: e.cfg.ClientKey, TrustedCAFile: e.cfg.ServerCACert}).ClientConfig()
	if err != nil {
		return nil // the apiserver, with the same files, will say what is wrong
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, Logger: zap.NewNop()})
	if err != nil {
		return nil
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, replacedTimeout)
	defer cancel()
	mine := uint64(cluster.ID())
	var (
		mu    sync.Mutex
		other []string
		wg    sync.WaitGroup
	)
	for _, ep := range endpoints {
		wg.Go(func() {
			st, err := cli.Status(ctx, ep)
			if err != nil || st.Header == nil || st.Header.ClusterId == mine {
				return
			}
			mu.Lock()
			other = append(other, fmt.Sprintf("%s (cluster %x)", ep, st.Header.ClusterId))
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(other) > 0 {
		return fmt.Errorf("%w: %s serve(s) another cluster than this member's %x", ErrRemoved, other[0], mine)
	}
	return nil
}
