// Package etcd runs kubox's embedded etcd member (go.etcd.io/etcd/server/v3/embed)
// with mutual TLS on both its client and peer listeners.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kubox/kubox/component"
)

// Config says where the member keeps its data, where it listens, and which
// certificates it uses.
type Config struct {
	Name       string // member name, the node name
	DataDir    string // created 0700
	NodeIP     net.IP // peer listener address (joins use it)
	ClientPort int    // on 127.0.0.1 and NodeIP; default 2379
	PeerPort   int    // on NodeIP; default 2380

	ServerCACert, ServerCert, ServerKey string // client listener: server cert, CA of allowed clients
	PeerCACert, PeerCert, PeerKey       string // peer listener, both directions
	// ClientCert and ClientKey (signed by the CA of ServerCACert) let the
	// member ask the others, when it stops by itself, whether it was
	// removed: they refuse a removed member's connections, so a member
	// that was removed while it was down stops without learning why.
	ClientCert, ClientKey string

	// InitialCluster and ClusterState are for joins; empty means a new
	// one-member cluster (or the existing one in DataDir).
	InitialCluster string
	ClusterState   string

	// FatalHook, when set, is called instead of exiting the process when
	// etcd logs at Fatal level (a failed WAL or database write, e.g. on a
	// full disk), so kubox can stop every component cleanly; see package
	// internal/fatal. The hook must not return.
	FatalHook zapcore.CheckWriteHook

	// QuotaBytes is the database size at which etcd raises NOSPACE and
	// refuses writes (see space.go); 0 means DefaultQuotaBytes.
	QuotaBytes int64
}

// DefaultQuotaBytes is etcd's own default quota.
const DefaultQuotaBytes = 2 << 30

// Etcd is the embedded etcd member.
type Etcd struct {
	cfg    Config
	e      *embed.Etcd
	failed chan error
	// replaced gets the result of checkReplaced, once.
	replaced chan error
}

var (
	_ component.Component   = (*Etcd)(nil)
	_ component.Initializer = (*Etcd)(nil)
	_ component.Readier     = (*Etcd)(nil)
	_ component.Failer      = (*Etcd)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Etcd {
	if cfg.ClientPort == 0 {
		cfg.ClientPort = 2379
	}
	if cfg.PeerPort == 0 {
		cfg.PeerPort = 2380
	}
	if cfg.QuotaBytes == 0 {
		cfg.QuotaBytes = DefaultQuotaBytes
	}
	return &Etcd{cfg: cfg, failed: make(chan error, 1)}
}

func (e *Etcd) Name() string { return "etcd" }

// ClientURL is where etcd's clients (the apiserver, snapshots) connect.
func (e *Etcd) ClientURL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.cfg.ClientPort))
}

// PeerURL is where other members reach this one.
func (e *Etcd) PeerURL() string {
	return "https://" + net.JoinHostPort(e.cfg.NodeIP.String(), strconv.Itoa(e.cfg.PeerPort))
}

func (e *Etcd) Init(ctx context.Context) error {
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create etcd data dir: %w", err)
	}
	return os.Chmod(e.cfg.DataDir, 0o700)
}

func (e *Etcd) embedConfig() (*embed.Config, error) {
	c := embed.NewConfig()
	c.Name = e.cfg.Name
	c.Dir = e.cfg.DataDir
	// NewConfig leaves this at 0, which makes etcd warn on every request.
	c.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	c.LogLevel = "warn"
	if e.cfg.FatalHook != nil {
		// etcd's own default logger, with the hook instead of os.Exit.
		lc := logutil.DefaultZapLoggerConfig
		lc.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
		lg, err := lc.Build(zap.WithFatalHook(e.cfg.FatalHook))
		if err != nil {
			return nil, fmt.Errorf("etcd logger: %w", err)
		}
		c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	}
	clientURL, err := url.Parse(e.ClientURL())
	if err != nil {
		return nil, err
	}
	peerURL, err := url.Parse(e.PeerURL())
	if err != nil {
		return nil, err
	}
	// Other boxes (their joins, learners' apiservers, kubox etcd/node
	// verbs) reach this member on the node IP; local clients on loopback.
	nodeClientURL, err := url.Parse("https://" + net.JoinHostPort(e.cfg.NodeIP.String(), strconv.Itoa(e.cfg.ClientPort)))
	if err != nil {
		return nil, err
	}
	c.ListenClientUrls = []url.URL{*clientURL, *nodeClientURL}
	c.AdvertiseClientUrls = []url.URL{*nodeClientURL}
	c.ListenPeerUrls = []url.URL{*peerURL}
	c.AdvertisePeerUrls = []url.URL{*peerURL}
	// No metrics listener beyond the client one: every listener is mTLS.
	c.ListenMetricsUrls = nil
	c.ClientTLSInfo = transport.TLSInfo{
		CertFile:       e.cfg.ServerCert,
		KeyFile:        e.cfg.ServerKey,
		TrustedCAFile:  e.cfg.ServerCACert,
		ClientCertAuth: true,
	}
	c.PeerTLSInfo = transport.TLSInfo{
		CertFile:       e.cfg.PeerCert,
		KeyFile:        e.cfg.PeerKey,
		TrustedCAFile:  e.cfg.PeerCACert,
		ClientCertAuth: true,
	}
	c.InitialCluster = c.InitialClusterFromName(c.Name)
	if e.cfg.InitialCluster != "" {
		c.InitialCluster = e.cfg.InitialCluster
	}
	if e.cfg.ClusterState != "" {
		c.ClusterState = e.cfg.ClusterState
	}
	// Keep the database small on long-running boxes; the space keeper
	// (space.go) defragments and handles NOSPACE.
	c.AutoCompactionMode = embed.CompactorModePeriodic
	c.AutoCompactionRetention = "1h"
	c.QuotaBackendBytes = e.cfg.QuotaBytes
	return c, nil
}

func (e *Etcd) Start(ctx context.Context) error {
	c, err := e.embedConfig()
	if err != nil {
		return fmt.Errorf("etcd config: %w", err)
	}
	srv, err := embed.StartEtcd(c)
	if err != nil && e.cfg.ClusterState == embed.ClusterStateFlagExisting {
		// Joining: the usual cause is a firewall between the boxes.
		return fmt.Errorf("start embedded etcd in %s to join the members at %s (this box and they must reach each other's etcd peer port): %w",
			e.cfg.DataDir, strings.Join(e.otherPeers(), ", "), err)
	} else if err != nil {
		return fmt.Errorf("start embedded etcd in %s: %w", e.cfg.DataDir, err)
	}
	e.e = srv
	e.replaced = make(chan error, 1)
	go campaignAlone(ctx, srv.Server)
	go e.watchReplaced(ctx, srv)
	go func() {
		select {
		case err, ok := <-srv.Err():
			if !ok || err == nil {
				return
			}
			select {
			case <-srv.Server.StoppingNotify():
				// The listeners gave up because the server stops by
				// itself (before it was ready): say why it does.
				<-srv.Server.StopNotify()
				if ctx.Err() == nil {
					e.failed <- e.stopReason(srv)
				}
			default:
				e.failed <- err
			}
		case <-srv.Server.StopNotify():
			if ctx.Err() == nil {
				e.failed <- e.stopReason(srv)
			}
		}
	}()
	return nil
}

// otherPeers are the peer URLs of InitialCluster's other members.
func (e *Etcd) otherPeers() []string {
	var urls []string
	for _, kv := range strings.Split(e.cfg.InitialCluster, ",") {
		if name, u, ok := strings.Cut(kv, "="); ok && name != e.cfg.Name {
			urls = append(urls, u)
		}
	}
	return urls
}

// ErrRemoved means this member was removed from its cluster (`kubox node
// remove`), or another member was made a cluster of its own without it
// (`kubox etcd recover`): its data dir can never serve that cluster again.
var ErrRemoved = errors.New("this box's etcd member was removed from the cluster")

// stopReason says why etcd stopped by itself; the common case on a
// multi-box cluster is that this member was removed (`kubox node remove`),
// either while it ran (it applied its own removal) or while it was down
// (the others refused it at once).
func (e *Etcd) stopReason(srv *embed.Etcd) error {
	id, cluster := srv.Server.MemberID(), srv.Server.Cluster()
	if cluster.Member(id) == nil {
		return ErrRemoved
	}
	var others []string
	for _, m := range cluster.Members() {
		if m.ID != id {
			others = append(others, m.ClientURLs...)
		}
	}
	if removed, err := e.removedPerOthers(uint64(id), others); err == nil && removed {
		return ErrRemoved
	}
	return errors.New("etcd server stopped")
}

// removedPerOthers asks the other members whether id is still one of them.
// Only an answer from a member with quorum (a linearizable member list)
// counts.
func (e *Etcd) removedPerOthers(id uint64, endpoints []string) (bool, error) {
	if len(endpoints) == 0 || e.cfg.ClientCert == "" {
		return false, errors.New("no other member to ask")
	}
	tlsCfg, err := (&transport.TLSInfo{CertFile: e.cfg.ClientCert, KeyFile: e.cfg.ClientKey, TrustedCAFile: e.cfg.ServerCACert}).ClientConfig()
	if err != nil {
		return false, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: askTimeout, Logger: zap.NewNop()})
	if err != nil {
		return false, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range list.Members {
		if m.ID == id {
			return false, nil
		}
	}
	return true, nil
}

// askTimeout bounds the question to the other members: a cluster with
// quorum answers in milliseconds.
const askTimeout = 3 * time.Second

func (e *Etcd) Ready(ctx context.Context) error {
	select {
	case <-e.e.Server.ReadyNotify():
	case err := <-e.replaced:
		// Before anything (the apiserver) writes to a member that
		// another box replaced: a second cluster must not start.
		if err != nil {
			return err
		}
		select {
		case <-e.e.Server.ReadyNotify():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-e.replaced:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Etcd) Failed() <-chan error { return e.failed }

func (e *Etcd) Stop(ctx context.Context) error {
	if e.e == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		e.e.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("etcd did not close in time: %w", ctx.Err())
	}
}

// Member is an etcd member as this one knows it.
type Member struct {
	Name       string // empty until the member first starts
	Learner    bool
	ClientURLs []string
}

// Members is the membership this member has applied. It needs no request,
// so a learner, which refuses every membership call, knows it too.
func (e *Etcd) Members(context.Context) ([]Member, error) {
	if e.e == nil {
		return nil, errors.New("etcd is not started")
	}
	var out []Member
	for _, m := range e.e.Server.Cluster().Members() {
		out = append(out, Member{Name: m.Name, Learner: m.IsLearner, ClientURLs: m.ClientURLs})
	}
	return out, nil
}

// DialTimeout is how long clients of this member wait for a connection.
const DialTimeout = 5 * time.Second
