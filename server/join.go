package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/internal/fsutil"
)

// How a joining box finds and authenticates to the cluster:
//
//  1. It dials the --join URL and completes a TLS handshake in which the
//     server must present the CA pinned by the token (its SPKI hash); the
//     apiserver serves its cert followed by the CA for that purpose. Only
//     then is the token's secret sent, over that pinned connection.
//  2. The apiserver's bootstrap-token authenticator checks the secret and the
//     expiry (Secret kube-system/bootstrap-token-<id>) and puts the caller in
//     JoinGroup, which RBAC lets read one Secret: JoinSecret, the cluster's
//     settings and, per token, the shared PKI (CAs and keys, service-account
//     key, encryption config) sealed with a key derived from that token's
//     secret (see joinbundle.go). The joiner opens its token's entry.
//  3. With the etcd CA from that bundle the joiner makes an in-memory etcd
//     client cert, checks that the cluster's etcd has quorum, and adds
//     itself as a learner; only then does it write anything to its disk.
//  4. Once the box is up, it deletes a single-use token and its bundle
//     (join-bundle, which every box runs at start).
const (
	JoinSecret    = "kubox-join"
	JoinGroup     = "system:bootstrappers:kubox:join"
	joinRole      = "kubox:join"
	clusterKey    = "cluster.json"
	joinStateFile = "join.json"
	// joinTimeout bounds each remote step of a join.
	joinTimeout = 15 * time.Second
	// quorumTimeout bounds the reads that need etcd's quorum (the join
	// bundle, the member list): a healthy cluster answers them in
	// milliseconds, one without quorum never does.
	quorumTimeout = 5 * time.Second
)

// ClusterSettings are the settings every box of a cluster must share.
type ClusterSettings struct {
	ClusterCIDR    string `json:"clusterCIDR"`
	ServiceCIDR    string `json:"serviceCIDR"`
	ClusterDomain  string `json:"clusterDomain"`
	EtcdClientPort int    `json:"etcdClientPort"`
}

func (c *Config) clusterSettings() ClusterSettings {
	return ClusterSettings{ClusterCIDR: c.ClusterCIDR.String(), ServiceCIDR: c.ServiceCIDR.String(),
		ClusterDomain: c.ClusterDomain, EtcdClientPort: c.EtcdClientPort}
}

// joinState is what a joined box remembers about its join (DataDir/join.json).
type joinState struct {
	// Peers are the other members' etcd client URLs at join time.
	Peers []string `json:"peers"`
	// Token is the id of the single-use token this box joined with, until
	// the box is up and has deleted it.
	Token string `json:"token,omitempty"`
}

// joinResult is what the join hands to build().
type joinResult struct {
	memberID       uint64
	initialCluster string
	promote        bool // promote this member once caught up
	peers          []string
	shared         map[string][]byte
	// How to reach the cluster's etcd to undo the member add.
	etcdEndpoints []string
	etcdTLS       *tls.Config
}

// JoinError is a refused join: one line for the user; nothing was changed.
type JoinError struct{ Msg string }

func (e *JoinError) Error() string { return e.Msg }

func refuse(format string, a ...any) error { return &JoinError{Msg: fmt.Sprintf(format, a...)} }

// joinURL checks --join and returns host:port.
func joinAddr(raw string) (string, string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return "", "", refuse("--join %q: expected the https URL of a running box, e.g. https://10.0.0.1:6443", raw)
	}
	port := u.Port()
	if port == "" {
		port = "6443"
	}
	return net.JoinHostPort(u.Hostname(), port), u.Hostname(), nil
}

// prepareJoin runs before anything else is built. For a box that has
// already joined it only checks that the token still matches its CA.
func (s *Server) prepareJoin(ctx context.Context) (*joinResult, error) {
	c, p := s.cfg, s.paths
	tok, err := bootstrap.ParseToken(c.Token)
	if err != nil {
		return nil, refuse("join token: %v", err)
	}
	addr, host, err := joinAddr(c.JoinURL)
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(p.PKI, "ca.crt")
	if have, err := bootstrap.CAHashFile(caFile); err == nil {
		if have != tok.CAHash {
			return nil, refuse("this box already belongs to another cluster (its CA %s is sha256:%s, the token pins sha256:%s): "+
				"to join, move %s aside first; to keep running it, drop --join/--token", caFile, have, tok.CAHash, c.DataDir)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read this box's CA: %w", err)
	}
	if member, _ := fsutil.Exists(filepath.Join(p.Etcd, "member")); member {
		s.log.Info("already joined; starting with the existing etcd member", "data_dir", p.Etcd)
		return nil, nil
	}

	s.log.Info("joining", "server", addr)
	dctx, cancel := context.WithTimeout(ctx, joinTimeout)
	_, err = bootstrap.Discover(dctx, addr, tok.CAHash)
	cancel()
	if errors.Is(err, bootstrap.ErrCAMismatch) {
		return nil, refuse("refusing to join %s: %v; wrong server or token, nothing was sent", addr, err)
	} else if err != nil {
		return nil, refuse("cannot reach %s: %v", addr, err)
	}

	bundle, settings, err := fetchBundle(ctx, addr, host, tok)
	if err != nil {
		return nil, err
	}
	shared := bundle.Files
	if h, err := bootstrap.CheckShared(shared); err != nil {
		return nil, refuse("join bundle from %s is unusable: %v", addr, err)
	} else if h != tok.CAHash {
		return nil, refuse("join bundle from %s carries CA sha256:%s, the token pins sha256:%s", addr, h, tok.CAHash)
	}
	if mine := c.clusterSettings(); mine != settings {
		return nil, refuse("this box's settings %+v differ from the cluster's %+v: set the same cluster-cidr, service-cidr, cluster-domain and etcd-client-port", mine, settings)
	}

	etcdURL := "https://" + net.JoinHostPort(host, strconv.Itoa(settings.EtcdClientPort))
	tlsCfg, err := bootstrap.EtcdClientTLS(shared, time.Hour)
	if err != nil {
		return nil, err
	}
	cli, err := etcdClient([]string{etcdURL}, tlsCfg)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	res, err := s.addMember(ctx, cli, etcdURL)
	if err != nil {
		return nil, err
	}
	if !res.promote {
		s.log.Info("joined as a non-voting etcd learner (hot standby): two voters would tolerate no loss; " +
			"join a third box (this one is then promoted) or run `kubox etcd promote`")
	}
	res.etcdEndpoints, res.etcdTLS = append([]string{etcdURL}, res.peers...), tlsCfg
	res.shared = shared
	// Only now does anything reach this box's disk.
	if err := bootstrap.WriteShared(p.PKI, shared); err != nil {
		return nil, fmt.Errorf("install the cluster's PKI: %w (%s)", err, s.rollbackMember(res))
	}
	st := joinState{Peers: res.peers}
	if !bundle.Reusable {
		st.Token = tok.ID
	}
	state, _ := json.Marshal(st)
	if err := fsutil.WriteFileAtomic(filepath.Join(c.DataDir, joinStateFile), state, 0o600); err != nil {
		return nil, fmt.Errorf("record the join: %w (%s)", err, s.rollbackMember(res))
	}
	return res, nil
}

// fetchBundle reads JoinSecret over the pinned connection, authenticated
// with the token, and opens the token's sealed bundle.
func fetchBundle(ctx context.Context, addr, host string, tok bootstrap.Token) (bootstrap.JoinBundle, ClusterSettings, error) {
	var settings ClusterSettings
	var none bootstrap.JoinBundle
	tlsCfg := bootstrap.PinnedTLSConfig(tok.CAHash, host)
	rc := &rest.Config{
		Host: "https://" + addr, BearerToken: tok.Bearer(), Timeout: joinTimeout, UserAgent: "kubox-join",
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil, TLSHandshakeTimeout: 10 * time.Second},
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return none, settings, err
	}
	ctx, cancel := context.WithTimeout(ctx, quorumTimeout)
	defer cancel()
	sec, err := client.CoreV1().Secrets("kube-system").Get(ctx, JoinSecret, metav1.GetOptions{})
	switch {
	case err != nil && (ctx.Err() != nil || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)):
		return none, settings, refuse("%s did not serve the join within %s: its etcd has no quorum or is unreachable: bring a majority of members back before joining; no member was added", addr, quorumTimeout)
	case apierrors.IsUnauthorized(err):
		return none, settings, refuse("%s refused the token: it is wrong, expired or deleted (see `kubox token list` on a member; create one with `kubox token create`)", addr)
	case apierrors.IsForbidden(err):
		return none, settings, refuse("%s accepted the token but it does not allow joining: create one with `kubox token create`", addr)
	case apierrors.IsNotFound(err):
		return none, settings, refuse("%s has not published its join bundle yet: wait until it is ready and try again", addr)
	case err != nil:
		return none, settings, refuse("%s cannot serve the join (is its etcd without quorum?): %v", addr, err)
	}
	if err := json.Unmarshal(sec.Data[clusterKey], &settings); err != nil {
		return none, settings, refuse("join bundle from %s: bad %s: %v", addr, clusterKey, err)
	}
	sealed, ok := sec.Data[sealedKey(tok.ID)]
	if !ok {
		return none, settings, refuse("%s refused the token: it was used by an earlier join (tokens are single use unless created with --reusable) or made by an older kubox; create one with `kubox token create`", addr)
	}
	bundle, err := bootstrap.OpenBundle(tok, sealed)
	if err != nil {
		return none, settings, refuse("join bundle from %s: %v", addr, err)
	}
	return bundle, settings, nil
}

func etcdClient(endpoints []string, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

// learnerWait bounds how long a join waits for another box's learner to be
// promoted (etcd takes one learner at a time).
const learnerWait = 5 * time.Minute

// addMember checks the cluster can take a member and adds this box as a
// learner. Before that, any learner already there is promoted, since etcd
// allows one learner and a third box makes a cluster that tolerates a loss.
// A learner that cannot be promoted yet (another box joining at the same
// time, not started or not caught up) is waited for, up to learnerWait.
func (s *Server) addMember(ctx context.Context, cli *clientv3.Client, via string) (*joinResult, error) {
	c := s.cfg
	myPeer := "https://" + net.JoinHostPort(c.NodeIP.String(), strconv.Itoa(c.EtcdPeerPort))
	begin, said := time.Now(), time.Time{}
	for {
		voters, learner, err := s.promoteLearners(ctx, cli, via, myPeer)
		if err != nil {
			return nil, err
		}
		if learner == "" {
			added, err := s.addLearner(ctx, cli, myPeer)
			switch {
			case errors.Is(err, rpctypes.ErrTooManyLearners):
				learner = "of another box"
			case errors.Is(err, rpctypes.ErrUnhealthy):
				return nil, refuse("etcd refused to add this box as a member for %s: a voting member is down or keeps reconnecting (see `kubox etcd members`); bring it back and try again; no member was added", removeSettle)
			case err != nil:
				return nil, refuse("etcd refused to add this box as a member: %v; no member was added", err)
			default:
				return s.joinResultOf(added, myPeer, voters), nil
			}
		}
		if time.Since(begin) >= learnerWait {
			return nil, refuse("etcd takes one learner at a time and the learner %s was not promoted within %s (is that box's kubox running? see `kubox etcd members`); no member was added: try again once it is a voter or removed", learner, learnerWait)
		}
		if time.Since(said) >= 5*time.Second {
			s.log.Info("another box is joining: waiting until its etcd learner is promoted, then joining", "learner", learner,
				"waited", time.Since(begin).Round(time.Second), "limit", learnerWait)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// promoteLearners lists the members, checks this box is not one of them
// yet, and promotes the learners that can be. It returns the number of
// voters and, if a learner is left that cannot be promoted yet, its name.
func (s *Server) promoteLearners(ctx context.Context, cli *clientv3.Client, via, myPeer string) (voters int, waitFor string, err error) {
	c := s.cfg
	// Linearizable, so it needs quorum; a member that knows of no leader
	// says so at once rather than at the timeout.
	lctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), quorumTimeout)
	list, err := cli.MemberList(lctx)
	cancel()
	if err != nil {
		return 0, "", refuse("etcd at %s has no quorum or is unreachable (%v): bring a majority of members back before joining; no member was added", via, err)
	}
	var learners []*etcdserverpb.Member
	for _, m := range list.Members {
		if m.Name == c.NodeName || slices.Contains(m.PeerURLs, myPeer) {
			if m.Name == "" && slices.Equal(m.PeerURLs, []string{myPeer}) {
				// Left by a join of this box that never started: take it over.
				rctx, cancel := context.WithTimeout(ctx, joinTimeout)
				_, err := cli.MemberRemove(rctx, m.ID)
				cancel()
				if err != nil {
					return 0, "", refuse("remove the unstarted member %x this box left earlier: %v", m.ID, err)
				}
				continue
			}
			return 0, "", refuse("etcd already has a member named %q or at %s: if that box is gone, run `kubox node remove %s` on a member first", m.Name, myPeer, c.NodeName)
		}
		if m.IsLearner {
			learners = append(learners, m)
		} else {
			voters++
		}
	}
	for _, m := range learners {
		if m.Name == "" {
			// Added by another box's join whose etcd has not started.
			waitFor = fmt.Sprintf("%x (at %s, not started)", m.ID, strings.Join(m.PeerURLs, ","))
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, joinTimeout)
		_, err := cli.MemberPromote(pctx, m.ID)
		cancel()
		switch {
		case err == nil:
			s.log.Info("promoted the existing learner to a voter", "member", m.Name)
			voters++
		case errors.Is(err, rpctypes.ErrMemberNotLearner):
			voters++ // promoted meanwhile (by its own box, or another join)
		case errors.Is(err, rpctypes.ErrMemberLearnerNotReady), errors.Is(err, rpctypes.ErrMemberNotEnoughStarted), errors.Is(err, rpctypes.ErrUnhealthy):
			waitFor = m.Name
		default:
			return 0, "", refuse("promote learner %s first, so this box can join: %v (try again once it has caught up)", m.Name, err)
		}
	}
	return voters, waitFor, nil
}

// joinResultOf is what the member add means for this box's etcd.
func (s *Server) joinResultOf(added *clientv3.MemberAddResponse, myPeer string, voters int) *joinResult {
	res := &joinResult{memberID: added.Member.ID, promote: voters >= 2}
	var cluster []string
	for _, m := range added.Members {
		switch {
		case m.ID == added.Member.ID:
			cluster = append(cluster, s.cfg.NodeName+"="+myPeer)
		case m.Name != "":
			for _, u := range m.PeerURLs {
				cluster = append(cluster, m.Name+"="+u)
			}
			res.peers = append(res.peers, m.ClientURLs...)
		}
	}
	res.initialCluster = strings.Join(cluster, ",")
	return res
}

// addLearner adds peerURL as a learner, retrying what etcd refuses only for
// a moment:
//   - etcd refuses a member add until every voting member has been
//     connected to the leader for 5 s (strict reconfiguration check); one
//     that was just promoted or restarted is not yet: retried for
//     removeSettle;
//   - etcd derives a new member's ID from its peer URL and the time in
//     whole seconds: an add within the second of an earlier add of the same
//     URL (a join retried right after its rollback) gets that removed
//     member's ID and is refused as "member not found": retried twice.
func (s *Server) addLearner(ctx context.Context, cli *clientv3.Client, peerURL string) (*clientv3.MemberAddResponse, error) {
	deadline := time.Now().Add(removeSettle)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, joinTimeout)
		added, err := cli.MemberAddAsLearner(actx, []string{peerURL})
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrMemberNotFound) && attempt < 3:
			s.log.Info("etcd gave the new member the ID of one removed this second (a join retried at once); adding it again in a second")
		case errors.Is(err, rpctypes.ErrUnhealthy) && time.Now().Before(deadline):
			if attempt == 1 {
				s.log.Info("etcd refuses new members until every voter has been connected for 5 s (one was just promoted or restarted); retrying")
			}
		default:
			return added, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
