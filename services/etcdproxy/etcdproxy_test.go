package etcdproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestChoose(t *testing.T) {
	const local = "127.0.0.1:2379"
	b1, b2, b3 := "10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"
	three := func(learner string) []Member {
		var ms []Member
		for i, n := range []string{"box1", "box2", "box3"} {
			ms = append(ms, Member{Name: n, Learner: n == learner, ClientURLs: []string{"https://" + []string{b1, b2, b3}[i]}})
		}
		return ms
	}
	two := three("box2")[:2]
	unstarted := Member{Name: "", Learner: true} // added, not started: no name, no URLs
	cases := []struct {
		name      string
		self      string
		members   []Member
		current   string
		down      []string
		want      string
		mustProbe bool
	}{
		{name: "voter uses its own member", self: "box2", members: three(""), current: b1, want: local},
		{name: "voter, others down", self: "box2", members: three(""), current: local, down: []string{b1, b3}, want: local},
		{name: "learner, one voter: no probe", self: "box2", members: two, want: b1},
		{name: "learner, one voter down: still it", self: "box2", members: two, down: []string{b1}, want: b1},
		{name: "learner with a member being added", self: "box2", members: append(two, unstarted), want: b1},
		{name: "learner, keeps a reachable current", self: "box3", members: three("box3"), current: b2, want: b2, mustProbe: true},
		{name: "learner, current down", self: "box3", members: three("box3"), current: b1, down: []string{b1}, want: b2, mustProbe: true},
		{name: "learner, first pick skips a down voter", self: "box3", members: three("box3"), down: []string{b1}, want: b2, mustProbe: true},
		{name: "learner, current removed", self: "box3", members: []Member{three("box3")[1], three("box3")[2], {Name: "box4", ClientURLs: []string{"https://10.0.0.4:2379"}}}, current: b1, want: b2, mustProbe: true},
		{name: "learner, all voters down: keep current", self: "box3", members: three("box3"), current: b2, down: []string{b1, b2}, want: b2},
		{name: "learner, all voters down, current gone: first", self: "box3", members: three("box3"), current: local, down: []string{b1, b2}, want: b1},
		{name: "not in the list (removed)", self: "box9", members: three(""), current: local, want: b1, mustProbe: true},
		{name: "no voter at all", self: "box2", members: []Member{{Name: "box2", Learner: true, ClientURLs: []string{"https://" + b2}}}, current: b1, want: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probed := false
			got, why := Choose(c.self, local, c.members, c.current, func(addr string) bool {
				probed = true
				for _, d := range c.down {
					if d == addr {
						return false
					}
				}
				return true
			})
			if got != c.want {
				t.Errorf("Choose = %q (%s), want %q", got, why, c.want)
			}
			if got != "" && why == "" {
				t.Errorf("Choose gave no reason for %q", got)
			}
			if c.mustProbe && !probed {
				t.Errorf("chose among several voters without probing")
			}
			if !c.mustProbe && probed && len(c.down) == 0 {
				t.Errorf("probed although there was nothing to choose between")
			}
		})
	}
}

// backend is a TCP server that says its name on each connection, then
// echoes.
type backend struct {
	name string
	ln   net.Listener
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, name+"\n")
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func hello(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read the backend's name: %v", err)
	}
	return strings.TrimSpace(string(buf[:n]))
}

// TestProxyFollowsMembership runs the proxy over real TCP backends: a
// learner's connections go to the voter; on promotion new connections go
// to the local member and the old ones are closed; the change is logged
// once, not per connection; Stop closes everything.
func TestProxyFollowsMembership(t *testing.T) {
	localB, voterB := newBackend(t, "local"), newBackend(t, "box1")
	var logs logBuf
	var mu sync.Mutex
	learner := true
	members := func(context.Context) ([]Member, error) {
		mu.Lock()
		defer mu.Unlock()
		return []Member{
			{Name: "box1", ClientURLs: []string{"https://" + voterB.addr()}},
			{Name: "box2", Learner: learner, ClientURLs: []string{"https://192.0.2.2:2379"}},
		}, nil
	}
	p, err := New(Config{
		Name: "box2", LocalURL: "https://" + localB.addr(), Members: members, TLS: &tls.Config{},
		Refresh: 20 * time.Millisecond, DialTimeout: time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.reachable = func(context.Context, string) bool { t.Error("probed with one voter"); return true }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	if err := p.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	rcancel()
	addr := strings.TrimPrefix(p.URL(), "https://")

	var old []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := hello(t, c); got != "box1" {
			t.Fatalf("learner's connection %d went to %q, want box1", i, got)
		}
		old = append(old, c)
	}
	// Bytes pass both ways unchanged.
	if _, err := old[0].Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if got := hello(t, old[0]); got != "ping" {
		t.Fatalf("echo through the proxy: %q", got)
	}

	mu.Lock()
	learner = false
	mu.Unlock()
	// The old connections end, so the apiserver reconnects.
	for i, c := range old {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 16)); err == nil {
			t.Fatalf("connection %d to the old backend still open after the promotion", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d to the old backend not closed within 5s of the promotion", i)
		}
	}
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := hello(t, c); got != "local" {
			t.Fatalf("voter's connection %d went to %q, want the local member", i, got)
		}
	}
	if n := logs.count("apiserver's etcd backend"); n != 2 {
		t.Errorf("logged %d backend lines for one start and one change, want 2:\n%s", n, logs.b.String())
	}

	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hello(t, held)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := p.Stop(sctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	held.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := held.Read(make([]byte, 16)); err == nil {
		t.Errorf("a proxied connection outlived Stop")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the proxy still accepts connections after Stop")
	}
	select {
	case err := <-p.Failed():
		t.Errorf("Stop reported as a failure: %v", err)
	default:
	}
}

// TestProxyBackendDown: a connection to a backend that refuses is closed at
// once (the client retries), and brings the next refresh forward.
func TestProxyBackendDown(t *testing.T) {
	dead := newBackend(t, "dead")
	deadAddr := dead.addr()
	dead.ln.Close()
	asked := make(chan struct{}, 10)
	members := func(context.Context) ([]Member, error) {
		asked <- struct{}{}
		return []Member{{Name: "box1", ClientURLs: []string{"https://" + deadAddr}}, {Name: "box2", Learner: true}}, nil
	}
	p, err := New(Config{Name: "box2", LocalURL: "https://127.0.0.1:1", Members: members, TLS: &tls.Config{}, Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if err := p.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	<-asked
	c, err := net.Dial("tcp", strings.TrimPrefix(p.URL(), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from a connection whose backend is down: %v, want EOF", err)
	}
	select {
	case <-asked:
	case <-time.After(5 * time.Second):
		t.Errorf("a failed dial did not bring the member list refresh forward")
	}
}
