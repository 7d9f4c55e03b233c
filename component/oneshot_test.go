package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// bare has only the required methods: no Init, no Ready, no Failed.
type bare struct {
	name string
	rec  func(string)
}

func (b *bare) Name() string                    { return b.name }
func (b *bare) Start(ctx context.Context) error { b.rec(b.name + ":start"); return nil }
func (b *bare) Stop(ctx context.Context) error  { b.rec(b.name + ":stop"); return nil }

func TestSupervisorCallsOnlyTheStepsAComponentHas(t *testing.T) {
	fs, log := fakes("a", "d")
	rec := func(s string) { fs[0].mu.Lock(); defer fs[0].mu.Unlock(); *log = append(*log, s) }
	one := OneShot("c", func(ctx context.Context) error { rec("c:step"); return nil })
	s := &Supervisor{Components: []Component{fs[0], &bare{name: "b", rec: rec}, one, fs[1]}}
	ctx := context.Background()
	if err := s.Start(ctx, ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The one-shot's step has finished before d starts: its Ready waited.
	want := "a:init|d:init|a:start|a:ready|b:start|c:step|d:start|d:ready|d:stop|b:stop|a:stop"
	if got := strings.Join(*log, "|"); got != want {
		t.Fatalf("calls\n got %s\nwant %s", got, want)
	}
}

func TestOneShotFailureFailsTheStartUnderItsName(t *testing.T) {
	fs, log := fakes("a", "b")
	s := &Supervisor{Components: []Component{fs[0], OneShot("publish", func(context.Context) error {
		return errors.New("apiserver said no")
	}), fs[1]}}
	err := s.Start(context.Background(), context.Background())
	if err == nil || err.Error() != "wait for publish to be ready: apiserver said no" {
		t.Fatalf("Start = %v", err)
	}
	if strings.Contains(strings.Join(*log, " "), "b:start") {
		t.Fatalf("b started after the failed step: %v", *log)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOneShotStartTimeoutEndsTheStepWithItsLastError(t *testing.T) {
	one := OneShot("promote", func(ctx context.Context) error {
		<-ctx.Done()
		return fmt.Errorf("promote: %w (last: learner behind)", context.Cause(ctx))
	})
	s := &Supervisor{Components: []Component{one}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Start(ctx, context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "promote: context deadline exceeded (last: learner behind)") {
		t.Fatalf("Start = %v, want the step's own error with the start's deadline", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOneShotStopCancelsARunningStep(t *testing.T) {
	ended := make(chan error, 1)
	one := OneShot("slow", func(ctx context.Context) error {
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})
	if err := one.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := one.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("step ended with %v", err)
		}
	default:
		t.Fatal("Stop returned before the step ended")
	}
}

func TestOneShotStopReportsAStepThatIgnoresCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	one := OneShot("stuck", func(context.Context) error { <-release; return nil })
	if err := one.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := one.Stop(ctx); !errors.Is(err, ErrStillRunning) {
		t.Fatalf("Stop = %v, want ErrStillRunning", err)
	}
}

func TestOneShotNeverStartedStopsCleanly(t *testing.T) {
	one := OneShot("never", func(context.Context) error { t.Error("step ran"); return nil })
	if err := one.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := one.(Readier).Ready(context.Background()); err == nil {
		t.Fatal("Ready of a step never started = nil")
	}
}

// blocked never gets ready; its run fails meanwhile.
type blocked struct {
	bare
	failed chan error
}

func (b *blocked) Ready(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
func (b *blocked) Failed() <-chan error            { return b.failed }

func TestSupervisorStartFailsEarlyWhenAFailerFails(t *testing.T) {
	b := &blocked{bare: bare{name: "apiserver", rec: func(string) {}}, failed: make(chan error, 1)}
	b.failed <- errors.New("port in use")
	s := &Supervisor{Components: []Component{b}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Start(ctx, context.Background())
	if err == nil || err.Error() != "wait for apiserver to be ready: port in use" {
		t.Fatalf("Start = %v", err)
	}
}

func TestSupervisorWaitIgnoresComponentsThatCannotFail(t *testing.T) {
	fs, log := fakes("a")
	rec := func(s string) { fs[0].mu.Lock(); defer fs[0].mu.Unlock(); *log = append(*log, s) }
	s := &Supervisor{Components: []Component{&bare{name: "b", rec: rec}, fs[0]}}
	if err := s.Start(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	fs[0].failed <- errors.New("exited")
	if err := s.Wait(context.Background()); err == nil || err.Error() != "a: exited" {
		t.Fatalf("Wait = %v, want a: exited", err)
	}
}
