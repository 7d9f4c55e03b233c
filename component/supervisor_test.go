package component

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake records the calls the supervisor makes, in one shared log.
type fake struct {
	name     string
	log      *[]string
	mu       *sync.Mutex
	initErr  error
	readyErr error
	stopWait time.Duration
	failed   chan error
}

func (f *fake) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.log = append(*f.log, f.name+":"+s)
}
func (f *fake) Name() string                   { return f.name }
func (f *fake) Init(ctx context.Context) error { f.record("init"); return f.initErr }
func (f *fake) Start(ctx context.Context) error {
	f.record("start")
	return nil
}
func (f *fake) Ready(ctx context.Context) error { f.record("ready"); return f.readyErr }
func (f *fake) Stop(ctx context.Context) error {
	f.record("stop")
	select {
	case <-time.After(f.stopWait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (f *fake) Failed() <-chan error { return f.failed }

func fakes(names ...string) ([]*fake, *[]string) {
	log := &[]string{}
	mu := &sync.Mutex{}
	var fs []*fake
	for _, n := range names {
		fs = append(fs, &fake{name: n, log: log, mu: mu, failed: make(chan error, 1)})
	}
	return fs, log
}

func components(fs []*fake) []Component {
	cs := make([]Component, len(fs))
	for i, f := range fs {
		cs[i] = f
	}
	return cs
}

func TestSupervisorStartsInOrderAndStopsInReverse(t *testing.T) {
	fs, log := fakes("a", "b", "c")
	s := &Supervisor{Components: components(fs)}
	// The status lines interleave with the calls, so a line names the
	// component that is about to start, not one already running.
	s.Status = func(msg string) { *log = append(*log, msg) }
	ctx := context.Background()
	if err := s.Start(ctx, ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	want := "a:init|b:init|c:init|starting a (1/3)|a:start|a:ready|starting b (2/3)|b:start|b:ready|starting c (3/3)|c:start|c:ready|c:stop|b:stop|a:stop"
	if got := strings.Join(*log, "|"); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
}

func TestSupervisorInitFailureStartsNothing(t *testing.T) {
	fs, log := fakes("a", "b")
	fs[1].initErr = errors.New("bad config")
	s := &Supervisor{Components: components(fs)}
	err := s.Start(context.Background(), context.Background())
	if err == nil || !strings.Contains(err.Error(), "init b: bad config") {
		t.Fatalf("err %v", err)
	}
	for _, call := range *log {
		if strings.HasSuffix(call, ":start") {
			t.Fatalf("%s after a failed init", call)
		}
	}
}

func TestSupervisorReadyFailureStopsOnlyStarted(t *testing.T) {
	fs, log := fakes("a", "b", "c")
	fs[1].readyErr = errors.New("not serving")
	s := &Supervisor{Components: components(fs)}
	if err := s.Start(context.Background(), context.Background()); err == nil {
		t.Fatal("want an error")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(*log, " ")
	if strings.Contains(got, "c:start") || !strings.HasSuffix(got, "b:stop a:stop") {
		t.Fatalf("calls: %s", got)
	}
}

func TestSupervisorWaitReportsFailure(t *testing.T) {
	fs, _ := fakes("a", "b")
	s := &Supervisor{Components: components(fs)}
	if err := s.Start(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	fs[1].failed <- errors.New("crashed")
	err := s.Wait(context.Background())
	if err == nil || err.Error() != "b: crashed" {
		t.Fatalf("Wait = %v, want b: crashed", err)
	}
}

func TestSupervisorWaitReturnsOnCancel(t *testing.T) {
	fs, _ := fakes("a")
	s := &Supervisor{Components: components(fs)}
	if err := s.Start(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait after cancel = %v, want nil", err)
	}
}

func TestSupervisorStopGoesOnAfterATimeout(t *testing.T) {
	fs, log := fakes("a", "b")
	fs[1].stopWait = time.Hour // never stops by itself
	s := &Supervisor{Components: components(fs)}
	if err := s.Start(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "stop b") {
		t.Fatalf("Stop = %v, want b's timeout", err)
	}
	if !strings.HasSuffix(strings.Join(*log, " "), "b:stop a:stop") {
		t.Fatalf("a was not stopped after b hung: %v", *log)
	}
}

func TestGoroutineReportsEarlyExit(t *testing.T) {
	var g Goroutine
	g.Go(context.Background(), "thing", func(ctx context.Context) error { return nil })
	select {
	case err := <-g.Failed():
		if err == nil || err.Error() != "thing stopped" {
			t.Fatalf("Failed = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no failure reported")
	}
}

func TestGoroutineStopCancelsAndWaits(t *testing.T) {
	var g Goroutine
	g.Go(context.Background(), "thing", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.Failed():
		t.Fatalf("a requested stop reported a failure: %v", err)
	default:
	}
}

// slowReady is ready only when its ctx ends (or never).
type slowReady struct{ bare }

func (s *slowReady) Ready(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

// A component that fails while a later one is still starting (a disk guard,
// etcd) fails the start at once, under its own name, instead of waiting for
// the start timeout.
func TestSupervisorStartFailsWhenAnEarlierComponentFails(t *testing.T) {
	fs, _ := fakes("guard")
	// The guard fails once the kubelet has started, long after its own Ready.
	slow := &slowReady{bare{name: "kubelet", rec: func(string) { fs[0].failed <- errors.New("disk full") }}}
	s := &Supervisor{Components: []Component{fs[0], slow}}
	done := make(chan error, 1)
	go func() { done <- s.Start(context.Background(), context.Background()) }()
	select {
	case err := <-done:
		if err == nil || err.Error() != "wait for kubelet to be ready: guard failed: disk full" {
			t.Fatalf("Start = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start still waits for the kubelet after the guard failed")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// gated is ready when its gate is closed.
type gated struct {
	bare
	gate chan struct{}
}

func (g *gated) Ready(ctx context.Context) error {
	select {
	case <-g.gate:
		g.rec(g.name + ":ready")
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// With Needs, a component that needs nothing not yet ready starts while
// another is still getting ready, one that needs it waits for it, and the
// stop goes in reverse of the components' order, not of the start's.
func TestSupervisorStartsByNeeds(t *testing.T) {
	var mu sync.Mutex
	var log []string
	rec := func(s string) { mu.Lock(); defer mu.Unlock(); log = append(log, s) }
	etcd := &gated{bare{name: "etcd", rec: rec}, make(chan struct{})}
	api := &gated{bare{name: "apiserver", rec: rec}, make(chan struct{})}
	ctrd := &gated{bare{name: "containerd", rec: rec}, make(chan struct{})}
	kubelet := &bare{name: "kubelet", rec: rec}
	s := &Supervisor{
		Components: []Component{etcd, api, ctrd, kubelet},
		Needs:      map[string][]string{"apiserver": {"etcd"}, "kubelet": {"apiserver", "containerd"}},
	}
	done := make(chan error, 1)
	go func() { done <- s.Start(context.Background(), context.Background()) }()
	calls := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(log, " ") }
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(calls(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in calls: %s", want, calls())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("containerd:start") // before etcd is ready
	close(ctrd.gate)
	waitFor("containerd:ready")
	close(etcd.gate)
	waitFor("apiserver:start")
	if strings.Contains(calls(), "kubelet:start") {
		t.Fatalf("kubelet started before the apiserver was ready: %s", calls())
	}
	close(api.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "etcd:start containerd:start containerd:ready etcd:ready apiserver:start apiserver:ready kubelet:start kubelet:stop containerd:stop apiserver:stop etcd:stop"
	if got := calls(); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
}

// A need that does not come earlier is refused before anything starts: it
// could never be ready in time.
func TestSupervisorRefusesANeedNotBefore(t *testing.T) {
	fs, log := fakes("a", "b")
	s := &Supervisor{Components: components(fs), Needs: map[string][]string{"a": {"b"}}}
	err := s.Start(context.Background(), context.Background())
	if err == nil || err.Error() != "a needs b, which does not come before it" {
		t.Fatalf("Start = %v", err)
	}
	if len(*log) != 0 {
		t.Fatalf("calls after a bad plan: %v", *log)
	}
}
