// Package etcdproxy gives the apiserver of a box that joined a cluster one
// etcd address that keeps working through membership changes.
//
// The apiserver's --etcd-servers is fixed when it starts. A box that joins
// as a learner cannot name its own member (a learner serves no writes), and
// naming the voters of that moment ties it to them after its own promotion.
// So the apiserver dials a loopback TCP passthrough instead: TLS stays end to
// end between the apiserver and etcd (every member's serving certificate
// names 127.0.0.1), and each new connection goes to this box's member while
// it is a voter, otherwise to a reachable voting member. The member list is
// the one the local member has applied, read every Refresh (in-process: a
// learner refuses every membership call, even a serializable one).
//
// Handing the apiserver every member, learner included, is not enough: etcd's
// client retries a learner's refusal of unary calls on another endpoint, but
// a learner refuses every stream (Watch, LeaseKeepAlive) and the client's
// watcher treats that refusal as final.
package etcdproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/kubox/kubox/component"
)

// Config says which member is this box's and how to reach etcd.
type Config struct {
	// Name is this box's etcd member name (the node name).
	Name string
	// LocalURL is this member's client URL, e.g. https://127.0.0.1:2379.
	LocalURL string
	// Members returns the membership as the local member knows it.
	Members func(ctx context.Context) ([]Member, error)
	// TLS is an etcd client configuration (kubox's etcd client
	// certificate), to probe members with a TLS handshake.
	TLS *tls.Config
	// Listener, when set, is where the proxy serves: the caller binds it
	// (and closes it if the proxy never starts), so that New touches
	// nothing. Otherwise New listens on Listen, default 127.0.0.1:0.
	Listener net.Listener
	Listen   string
	// Refresh is how often the member list is read; default 1s.
	Refresh time.Duration
	// DialTimeout bounds a connection to a member and a probe; default 2s.
	DialTimeout time.Duration
	Log         *slog.Logger
}

// Proxy is the component.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	local string // host:port of LocalURL
	ln    net.Listener

	// reachable is replaced in tests.
	reachable func(ctx context.Context, addr string) bool

	mu      sync.Mutex
	backend string
	pairs   map[*pair]struct{}
	ready   chan struct{}
	kick    chan struct{}
	conns   sync.WaitGroup
	run     component.Goroutine
}

var (
	_ component.Component = (*Proxy)(nil)
	_ component.Readier   = (*Proxy)(nil)
	_ component.Failer    = (*Proxy)(nil)
)

// Member is what the proxy needs to know of an etcd member.
type Member struct {
	Name       string
	Learner    bool
	ClientURLs []string
}

// pair is one proxied connection.
type pair struct {
	client, upstream net.Conn
	backend          string
}

func (p *pair) close() {
	p.client.Close()
	p.upstream.Close()
}

// New returns the component for cfg, its listener already bound so that
// URL can be handed to the apiserver's configuration.
func New(cfg Config) (*Proxy, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Members == nil {
		return nil, fmt.Errorf("etcd proxy: no member list")
	}
	u, err := url.Parse(cfg.LocalURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("etcd proxy: local member URL %q: not a URL", cfg.LocalURL)
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("etcd proxy: listen on %s: %w", cfg.Listen, err)
		}
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, local: u.Host, ln: ln,
		pairs: map[*pair]struct{}{}, ready: make(chan struct{}), kick: make(chan struct{}, 1)}
	p.reachable = p.probe
	return p, nil
}

func (p *Proxy) Name() string { return "etcd-proxy" }

// URL is the etcd server URL to give the apiserver.
func (p *Proxy) URL() string { return "https://" + p.ln.Addr().String() }

func (p *Proxy) Start(ctx context.Context) error {
	p.run.Go(ctx, "etcd proxy", p.serveLoop)
	return nil
}

// Failed reports a listener that stopped accepting.
func (p *Proxy) Failed() <-chan error { return p.run.Failed() }

// Ready waits until a backend is chosen.
func (p *Proxy) Ready(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("etcd proxy: no voting etcd member found: %w", ctx.Err())
	}
}

func (p *Proxy) Stop(ctx context.Context) error {
	err := p.run.Stop(ctx)
	p.ln.Close() // when never started
	return err
}

func (p *Proxy) serveLoop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	defer func() {
		cancel()
		p.ln.Close()
		p.mu.Lock()
		for pr := range p.pairs {
			pr.close()
		}
		p.mu.Unlock()
		p.conns.Wait()
		loops.Wait()
	}()
	loops.Add(2)
	go func() {
		defer loops.Done()
		p.refreshLoop(ctx)
	}()
	go func() {
		defer loops.Done()
		<-ctx.Done()
		p.ln.Close()
	}()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("etcd proxy: accept: %w", err)
		}
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			p.serve(ctx, c)
		}()
	}
}

func (p *Proxy) refreshLoop(ctx context.Context) {
	failing := false
	for {
		err := p.refresh(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			p.log.Warn("etcd proxy: cannot read the member list; keeping the current backend", "backend", p.current(), "err", err)
			failing = true
		case err == nil && failing:
			p.log.Info("etcd proxy: reading the member list again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-time.After(p.cfg.Refresh):
		}
	}
}

// refresh reads the member list, chooses the backend for new connections
// and, when that changes, closes the connections to the old one (the
// apiserver's etcd client reconnects at once).
func (p *Proxy) refresh(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	ms, err := p.cfg.Members(lctx)
	cancel()
	if err != nil {
		return err
	}
	cur := p.current()
	next, why := Choose(p.cfg.Name, p.local, ms, cur, func(addr string) bool { return p.reachable(ctx, addr) })
	if next == cur {
		return nil
	}
	p.mu.Lock()
	p.backend = next
	var old []*pair
	for pr := range p.pairs {
		if pr.backend != next {
			old = append(old, pr)
		}
	}
	p.mu.Unlock()
	for _, pr := range old {
		pr.close()
	}
	if next == "" {
		p.log.Warn("etcd proxy: no voting etcd member to send the apiserver to", "was", cur, "members", describe(ms))
		return nil
	}
	p.log.Info("etcd proxy: apiserver's etcd backend", "backend", next, "why", why, "was", cur, "closed_connections", len(old))
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	return nil
}

func (p *Proxy) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.backend
}

// serve pipes one apiserver connection to the current backend.
func (p *Proxy) serve(ctx context.Context, c net.Conn) {
	backend := p.current()
	if backend == "" {
		c.Close()
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	u, err := d.DialContext(ctx, "tcp", backend)
	if err != nil {
		// Not logged per connection: the next refresh, brought forward,
		// logs a change of backend.
		c.Close()
		p.refreshSoon()
		return
	}
	pr := &pair{client: c, upstream: u, backend: backend}
	p.mu.Lock()
	if p.backend != backend || ctx.Err() != nil {
		p.mu.Unlock()
		pr.close() // the backend changed while dialling
		return
	}
	p.pairs[pr] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(u, c)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, u)
		done <- struct{}{}
	}()
	// gRPC needs no half-close: when one side ends, both do.
	<-done
	pr.close()
	<-done
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

func (p *Proxy) refreshSoon() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// probe tells whether a member completes a TLS handshake with kubox's
// client certificate. A bare TCP connect would do, but etcd logs each
// connection that closes before its handshake.
func (p *Proxy) probe(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: p.cfg.TLS}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Choose returns the backend (host:port) for new connections and why: this
// box's member (at local) while it is a voter; otherwise the current backend if it
// is still a voter and reachable, or else the first reachable voter. With no
// voter reachable it keeps the current one if still a voter, or the first
// voter, so connections are tried again as soon as it is back. reachable is
// only asked when there is a choice between remote voters.
func Choose(self, local string, members []Member, current string, reachable func(addr string) bool) (string, string) {
	var voters []string
	for _, m := range members {
		if m.Name == self {
			if !m.Learner {
				return local, "this box's member is a voter"
			}
			continue
		}
		if !m.Learner {
			for _, cu := range m.ClientURLs {
				if u, err := url.Parse(cu); err == nil && u.Host != "" {
					voters = append(voters, u.Host)
				}
			}
		}
	}
	if len(voters) == 0 {
		return "", ""
	}
	if len(voters) == 1 {
		return voters[0], "this box's member is not a voter: the only voting member"
	}
	if slices.Contains(voters, current) && reachable(current) {
		return current, "still a reachable voter"
	}
	for _, v := range voters {
		if v != current && reachable(v) {
			return v, "this box's member is not a voter: a reachable voting member"
		}
	}
	if slices.Contains(voters, current) {
		return current, "no voting member reachable"
	}
	return voters[0], "no voting member reachable"
}

func describe(ms []Member) string {
	var b []byte
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		role := "voter"
		if m.Learner {
			role = "learner"
		}
		b = fmt.Appendf(b, "%s=%s", m.Name, role)
	}
	return string(b)
}
