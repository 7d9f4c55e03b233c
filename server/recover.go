package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/internal/fsutil"
)

// How `kubox etcd recover` turns a surviving box into a cluster of its own
// after the other boxes (the voters it needs for quorum) are lost for good.
//
// etcd's force-new-cluster cannot do it on every survivor: it keeps the
// member and drops the others, and a learner (the second box of a two-box
// site) would be left with no voter; raft refuses that ("removed all
// voters"). So, for a learner and a voter alike, the member's own database
// (member/snap/db, every key it applied) is made into the data dir of a new
// one-member cluster, the way `kubox restore` rebuilds one from a snapshot.
// The new cluster has a new cluster ID, which is also how an old box started
// again with its stale data learns that it was replaced (see
// embedded/etcd's replacement check): its peers answer with another ID.
//
// kubox server must be stopped (the database must not change under the
// copy); with --stop-pods-on-exit=false, the systemd unit's setting, pods
// keep running meanwhile and the next start adopts them.

// RecoverOptions are the choices of a recovery.
type RecoverOptions struct {
	// Force recovers even though a lost member still answers.
	Force bool
	// Progress, if set, gets one human line per step.
	Progress func(string)
}

// RecoverResult says what Recover did.
type RecoverResult struct {
	Lost        []string // the members dropped (names, or IDs of unstarted ones)
	WasLearner  bool
	OldEtcdDir  string // where the previous etcd data dir went
	OldJoinFile string // where join.json went, "" if there was none
	Duration    time.Duration
}

// RecoverError is a refused recovery: one line; nothing was changed.
type RecoverError struct{ Msg string }

func (e *RecoverError) Error() string { return e.Msg }

// answerTimeout bounds the check that a lost member really is gone.
const answerTimeout = 3 * time.Second

// Recover rebuilds this box's etcd as a one-member cluster from its own
// data. The caller holds the data dir's lock (kubox server stopped).
func Recover(ctx context.Context, c Config, opts RecoverOptions) (RecoverResult, error) {
	begin := time.Now()
	say := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	p := c.Paths()
	db := filepath.Join(p.Etcd, "member", "snap", "db")
	if ok, _ := fsutil.Exists(db); !ok {
		return RecoverResult{}, &RecoverError{Msg: fmt.Sprintf("no etcd data at %s: this box has nothing to recover from (use kubox restore with a snapshot)", db)}
	}
	staging, err := os.MkdirTemp(c.DataDir, ".etcd.recover-")
	if err != nil {
		return RecoverResult{}, fmt.Errorf("create a staging dir: %w", err)
	}
	defer os.RemoveAll(staging)
	copyDB := filepath.Join(staging, "db")
	say("copying this box's etcd database %s", db)
	if err := copyFile(db, copyDB); err != nil {
		return RecoverResult{}, fmt.Errorf("copy the etcd database: %w", err)
	}
	self, others, err := readMembers(copyDB, c.NodeName)
	if err != nil {
		return RecoverResult{}, err
	}
	if len(others) == 0 {
		return RecoverResult{}, &RecoverError{Msg: fmt.Sprintf("etcd on this box already is a one-member cluster (%s): nothing to recover", c.NodeName)}
	}
	role := "voter"
	if self.IsLearner {
		role = "learner"
	}
	var lost []string
	for _, m := range others {
		lost = append(lost, memberName(m.Name, m.ID))
	}
	say("this box is %s (a %s); the other members are %s", c.NodeName, role, strings.Join(lost, ", "))

	var urls []string
	for _, m := range others {
		urls = append(urls, m.PeerURLs...)
		urls = append(urls, m.ClientURLs...)
	}
	say("checking that the other members are gone (%s)", strings.Join(urls, ", "))
	answering, err := answeringURLs(ctx, p.PKI, others)
	if err != nil {
		return RecoverResult{}, err
	}
	if len(answering) > 0 {
		if !opts.Force {
			return RecoverResult{}, &RecoverError{Msg: fmt.Sprintf("refusing to recover: %s: it is not lost "+
				"(recovering would make two clusters that diverge); if it must be replaced anyway, stop kubox there and run this again with --force", strings.Join(answering, "; "))}
		}
		say("--force: recovering although %s", strings.Join(answering, "; "))
	}

	peerURL := "https://" + net.JoinHostPort(c.NodeIP.String(), strconv.Itoa(c.EtcdPeerPort))
	say("building a new one-member etcd cluster from this box's data: %s at %s", c.NodeName, peerURL)
	newDir := filepath.Join(staging, "etcd")
	if err := backup.NewEtcdDataDir(copyDB, newDir, c.NodeName, peerURL, true); err != nil {
		return RecoverResult{}, err
	}

	// The swap: the old data is moved aside, never deleted.
	now := time.Now()
	res := RecoverResult{Lost: lost, WasLearner: self.IsLearner}
	if res.OldEtcdDir, err = fsutil.MoveAside(p.Etcd, now); err != nil {
		return RecoverResult{}, err
	}
	say("moved the old etcd data aside to %s", res.OldEtcdDir)
	if err := os.Rename(newDir, p.Etcd); err != nil {
		if rerr := os.Rename(res.OldEtcdDir, p.Etcd); rerr != nil {
			return RecoverResult{}, fmt.Errorf("put the new etcd data in place: %w; and moving %s back failed: %v", err, res.OldEtcdDir, rerr)
		}
		return RecoverResult{}, fmt.Errorf("put the new etcd data in place: %w", err)
	}
	if err := fsutil.SyncDir(c.DataDir); err != nil {
		return RecoverResult{}, err
	}
	// A joined box's apiserver reaches etcd through the proxy to the
	// members it joined; alone now, it talks to its own member, as the
	// first box of a cluster does.
	if ok, _ := fsutil.Exists(p.JoinState); ok {
		if res.OldJoinFile, err = fsutil.MoveAside(p.JoinState, now); err != nil {
			return res, fmt.Errorf("etcd is rebuilt, but: %w (move it aside yourself before starting kubox)", err)
		}
	}
	res.Duration = time.Since(begin)
	return res, nil
}

// readMembers reads the etcd membership stored in the database db and
// returns this box's member (by name) and the others.
func readMembers(db, name string) (self *recoverMember, others []*recoverMember, err error) {
	be := backend.NewDefaultBackend(zap.NewNop(), db)
	defer be.Close()
	members, removed, err := readMembersFromBackend(be)
	if err != nil {
		return nil, nil, fmt.Errorf("read the etcd membership: %w", err)
	}
	var names []string
	for _, m := range members {
		if removed[uint64(m.ID)] {
			continue
		}
		if m.Name == name {
			self = m
			continue
		}
		others = append(others, m)
		names = append(names, memberName(m.Name, m.ID))
	}
	if self == nil {
		return nil, nil, &RecoverError{Msg: fmt.Sprintf("this box's etcd data has no member named %s (members: %s): set --node-name to this box's name", name, strings.Join(names, ", "))}
	}
	slices.SortFunc(others, func(a, b *recoverMember) int { return strings.Compare(a.Name, b.Name) })
	return self, others, nil
}

// recoverMember is an etcd member as the database records it.
type recoverMember struct {
	ID         uint64
	Name       string
	IsLearner  bool
	PeerURLs   []string
	ClientURLs []string
}

func readMembersFromBackend(be backend.Backend) (out []*recoverMember, removed map[uint64]bool, err error) {
	// MustReadMembersFromBackend panics on a bad record: make it an error.
	defer func() {
		if r := recover(); r != nil {
			out, removed, err = nil, nil, fmt.Errorf("%v", r)
		}
	}()
	ms, rm := schema.NewMembershipBackend(zap.NewNop(), be).MustReadMembersFromBackend()
	removed = map[uint64]bool{}
	for id := range rm {
		removed[uint64(id)] = true
	}
	for id, m := range ms {
		out = append(out, &recoverMember{ID: uint64(id), Name: m.Name, IsLearner: m.IsLearner, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs})
	}
	return out, removed, nil
}

func memberName(name string, id uint64) string {
	if name == "" {
		return fmt.Sprintf("unstarted member %x", id)
	}
	return name
}

// answeringURLs returns the members' URLs (peer and client) that accept a
// TLS connection with this box's etcd certificates: a box that does is
// not lost.
func answeringURLs(ctx context.Context, pkiDir string, members []*recoverMember) ([]string, error) {
	e := func(name string) string { return filepath.Join(pkiDir, "etcd", name) }
	peerTLS, err := (&transport.TLSInfo{CertFile: e("peer.crt"), KeyFile: e("peer.key"), TrustedCAFile: e("peer-ca.crt")}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd peer credentials: %w", err)
	}
	clientTLS, err := (&transport.TLSInfo{CertFile: e("client.crt"), KeyFile: e("client.key"), TrustedCAFile: e("server-ca.crt")}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client credentials: %w", err)
	}
	type target struct {
		name, url string
		tls       *tls.Config
	}
	var targets []target
	for _, m := range members {
		for _, u := range m.PeerURLs {
			targets = append(targets, target{memberName(m.Name, m.ID), u, peerTLS})
		}
		for _, u := range m.ClientURLs {
			targets = append(targets, target{memberName(m.Name, m.ID), u, clientTLS})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	answered := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { answered[i] = tlsAnswers(ctx, t.url, t.tls) })
	}
	wg.Wait()
	// One phrase per member: "box1 still answers at URL, URL".
	var out []string
	at := map[string][]string{}
	for i, t := range targets {
		if answered[i] {
			if at[t.name] == nil {
				out = append(out, t.name)
			}
			at[t.name] = append(at[t.name], t.url)
		}
	}
	for i, name := range out {
		out[i] = name + " still answers at " + strings.Join(at[name], ", ")
	}
	return out, nil
}

// tlsAnswers reports whether rawURL's host completes a TLS handshake whose
// server certificate this box's CA signed.
func tlsAnswers(ctx context.Context, rawURL string, cfg *tls.Config) bool {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return false
	}
	d := tls.Dialer{Config: cfg.Clone()}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
