package diskguard

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubox/kubox/internal/diskspace"
)

// fakeDisk is a 1 GiB filesystem (floor 64 MiB) whose free space the test sets.
type fakeDisk struct {
	free atomic.Int64
	fail atomic.Bool
}

func (f *fakeDisk) measure(dir string) (diskspace.Usage, error) {
	if f.fail.Load() {
		return diskspace.Usage{}, errors.New("statfs: input/output error")
	}
	free := f.free.Load()
	return diskspace.Usage{Path: dir, Device: "/dev/fake0", Total: diskspace.GiB, Free: free, Used: diskspace.GiB - free}, nil
}

func newGuard(d *fakeDisk) *Guard {
	return New(Config{Dir: "/var/lib/kubox", Interval: 5 * time.Millisecond, Measure: d.measure, Log: slog.New(slog.DiscardHandler)})
}

func TestGuardStopsKuboxBelowTheFloor(t *testing.T) {
	d := &fakeDisk{}
	d.free.Store(500 * diskspace.MiB)
	g := newGuard(d)
	ctx := context.Background()
	if err := g.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer g.Stop(ctx)
	// Nearly full, and a measurement that fails: no reason to stop.
	d.free.Store(100 * diskspace.MiB)
	d.fail.Store(true)
	time.Sleep(50 * time.Millisecond)
	d.fail.Store(false)
	d.free.Store(diskspace.MinFloor) // exactly the floor is still enough
	select {
	case err := <-g.Failed():
		t.Fatalf("failed above the floor: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	d.free.Store(40 * diskspace.MiB)
	select {
	case err := <-g.Failed():
		want := "data dir /var/lib/kubox: only 40.0 MiB free on /dev/fake0, below the 64.0 MiB floor: stopped; free space and kubox starts again"
		if err == nil || err.Error() != want {
			t.Fatalf("Failed = %v\nwant %s", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the guard did not fail below the floor")
	}
}

func TestGuardRefusesToStartBelowTheFloor(t *testing.T) {
	d := &fakeDisk{}
	// Above the floor, but below the floor and the WAL segment etcd
	// takes back as it opens.
	d.free.Store(100 * diskspace.MiB)
	err := newGuard(d).Init(context.Background())
	var low *diskspace.LowError
	if !errors.As(err, &low) || !strings.Contains(err.Error(), "below the 128.0 MiB a start needs") || !strings.Contains(err.Error(), ": not starting; ") {
		t.Fatalf("Init = %v", err)
	}
	d.free.Store(128 * diskspace.MiB)
	if err := newGuard(d).Init(context.Background()); err != nil {
		t.Fatalf("Init with 128 MiB free: %v", err)
	}
}

func TestGuardStopIsNoFailure(t *testing.T) {
	d := &fakeDisk{}
	d.free.Store(500 * diskspace.MiB)
	g := newGuard(d)
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.Failed():
		t.Fatalf("a stopped guard reported %v", err)
	default:
	}
}
