package fatal_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"

	"github.com/kubox/kubox/internal/fatal"
)

// catcher returns a Catcher whose last-resort exit is recorded, not done.
func catcher(grace time.Duration) (*fatal.Catcher, chan int) {
	exited := make(chan int, 1)
	return &fatal.Catcher{Grace: grace, Exit: func(code int) { exited <- code }}, exited
}

func TestKlogFatalIsReportedAndParksTheCaller(t *testing.T) {
	c, exited := catcher(200 * time.Millisecond)
	saved := klog.OsExit
	klog.OsExit = c.KlogExit
	defer func() { klog.OsExit = saved }()

	returned := make(chan struct{})
	go func() {
		klog.Fatalf("test: disk on fire")
		close(returned) // must never run: the caller expects the process gone
	}()
	select {
	case e := <-c.Reports():
		if e.Code != 255 {
			t.Errorf("code %d, want klog's 255", e.Code)
		}
		if !strings.Contains(e.Cause, "fatal_test.TestKlogFatalIsReportedAndParksTheCaller") || !strings.Contains(e.Cause, "fatal_test.go:") {
			t.Errorf("cause %q does not name the caller", e.Cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report of klog.Fatalf")
	}
	select {
	case code := <-exited:
		if code != 255 {
			t.Errorf("last-resort exit with %d, want 255", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no last-resort exit after the grace period")
	}
	select {
	case <-returned:
		t.Fatal("klog.Fatalf returned to its caller")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestZapFatalNamesComponentAndError(t *testing.T) {
	c, _ := catcher(time.Hour)
	lg := zap.New(zapcore.NewNopCore(), zap.WithFatalHook(c.ZapHook("etcd")))
	returned := make(chan struct{})
	go func() {
		lg.Fatal("failed to save Raft hard state and entries", zap.Error(errors.New("write wal: no space left on device")))
		close(returned)
	}()
	select {
	case e := <-c.Reports():
		want := "etcd: fatal error: failed to save Raft hard state and entries: write wal: no space left on device"
		if e.Error() != want {
			t.Errorf("got %q, want %q", e.Error(), want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report of zap Fatal")
	}
	select {
	case <-returned:
		t.Fatal("zap Fatal returned to its caller")
	case <-time.After(100 * time.Millisecond):
	}
	// A second fatal exit only parks: the first is being handled.
	go lg.Fatal("again")
	select {
	case e := <-c.Reports():
		t.Fatalf("second report %v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestCallerOf(t *testing.T) {
	stack := `goroutine 812 [running]:
github.com/kubox/kubox/internal/fatal.(*Catcher).KlogExit(0xc000a1e000, 0xff)
	/src/internal/fatal/fatal.go:88 +0x5a
k8s.io/klog/v2.(*loggingT).output(0x8e4a5a0, 0x3, 0x0, 0xc00123, 0x2, {0x6b1f2c1, 0xd}, 0x1c2, 0x0)
	/mod/k8s.io/klog/v2@v2.140.0/klog.go:1003 +0x6c5
k8s.io/klog/v2.Fatalf(...)
	/mod/k8s.io/klog/v2@v2.140.0/klog.go:1711
k8s.io/kubernetes/pkg/controller/nodeipam.(*Controller).Run(0xc0004d2000, {0x71e4b28, 0xc000b4e0a0})
	/mod/k8s.io/kubernetes@v1.36.3/pkg/controller/nodeipam/node_ipam_controller.go:140 +0x1a5
created by k8s.io/kubernetes/cmd/kube-controller-manager/app.startNodeIpamController in goroutine 700
	/mod/k8s.io/kubernetes@v1.36.3/cmd/kube-controller-manager/app/core.go:177 +0x4f2
`
	comp, where := fatal.CallerOf(stack)
	if comp != "controller-manager" {
		t.Errorf("component %q, want controller-manager", comp)
	}
	if want := "k8s.io/kubernetes/pkg/controller/nodeipam.(*Controller).Run (nodeipam/node_ipam_controller.go:140)"; where != want {
		t.Errorf("where %q, want %q", where, want)
	}

	// A helper of a library first, the component further down.
	stack2 := `goroutine 9 [running]:
k8s.io/klog/v2.Fatal(...)
	/mod/k8s.io/klog/v2@v2.140.0/klog.go:1685
k8s.io/apimachinery/pkg/util/runtime.Must(...)
	/mod/k8s.io/apimachinery@v0.36.3/pkg/util/runtime/runtime.go:200
github.com/kubox/kubox/embedded/dns.(*Server).Start(0xc000123)
	/src/embedded/dns/dns.go:50 +0x10
`
	comp, where = fatal.CallerOf(stack2)
	if comp != "dns" || !strings.HasPrefix(where, "k8s.io/apimachinery/pkg/util/runtime.Must") {
		t.Errorf("got %q, %q; want dns, apimachinery's Must", comp, where)
	}
	if comp, _ := fatal.CallerOf("goroutine 1 [running]:\nmain.main()\n\t/src/main.go:3 +0x1\n"); comp != "unknown component" {
		t.Errorf("component %q, want unknown component", comp)
	}
}
