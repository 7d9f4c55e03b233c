// Package fatal catches the fatal exits of upstream libraries that run in
// kubox's process (klog's Fatal, Exit and FlushAndExit; zap's Fatal, which
// etcd uses) and turns each into a report, so kubox stops every component
// cleanly (etcd last) and exits non-zero with one line naming the component
// and the cause, instead of the library ending the process on the spot.
//
// The goroutine that called the fatal function must not return into code
// that expects the process to be gone: it is parked. If the clean stop does
// not end the process within the grace period (the parked goroutine may
// hold a lock the stop needs), it exits the process itself.
package fatal

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
)

// Error is a caught fatal exit.
type Error struct {
	Component string // kubox's name of the component ("etcd", "apiserver", ...)
	Cause     string // the library's message, or where it was called from
	Code      int    // the exit status the library asked for
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: fatal error: %s", e.Component, e.Cause)
}

// Catcher receives the fatal exits of one process.
type Catcher struct {
	// Grace is how long a caught goroutine waits for the clean stop to end
	// the process before it exits the process itself (0: 60 s).
	Grace time.Duration
	// Exit ends the process after Grace (nil: os.Exit).
	Exit func(code int)

	once     sync.Once
	reports  chan *Error
	reported sync.Once
}

// Reports delivers the first caught fatal exit; later ones only park their
// goroutine (the process is stopping already).
func (c *Catcher) Reports() <-chan *Error {
	c.init()
	return c.reports
}

func (c *Catcher) init() {
	c.once.Do(func() { c.reports = make(chan *Error, 1) })
}

// Catch reports e and parks the calling goroutine; it never returns.
func (c *Catcher) Catch(e *Error) {
	c.init()
	// Only the first: the process is stopping already for a later one.
	c.reported.Do(func() { c.reports <- e })
	grace := c.Grace
	if grace <= 0 {
		grace = 60 * time.Second
	}
	time.Sleep(grace)
	fmt.Fprintf(os.Stderr, "kubox: %s; the clean stop did not finish in %s, exiting\n", e, grace)
	exit := c.Exit
	if exit == nil {
		exit = os.Exit
	}
	exit(e.Code)
	// Only a test's Exit returns: end this goroutine, never the caller's code.
	runtime.Goexit()
}

// KlogExit is for klog.OsExit: klog calls it after logging a Fatal or Exit
// message (which it has printed on stderr just before). The component is
// found from the caller's stack.
func (c *Catcher) KlogExit(code int) {
	buf := make([]byte, 64<<10)
	buf = buf[:runtime.Stack(buf, false)]
	comp, where := CallerOf(string(buf))
	c.Catch(&Error{Component: comp, Cause: fmt.Sprintf("klog fatal exit in %s (its message is the F line logged just before)", where), Code: code})
}

// ZapHook is for zap.WithFatalHook on the logger of component (etcd):
// zap calls it after writing a Fatal entry, instead of exiting.
func (c *Catcher) ZapHook(component string) zapcore.CheckWriteHook {
	return zapHook{c: c, component: component}
}

type zapHook struct {
	c         *Catcher
	component string
}

func (h zapHook) OnWrite(ce *zapcore.CheckedEntry, fields []zapcore.Field) {
	cause := ce.Message
	for _, f := range fields {
		if f.Type == zapcore.ErrorType {
			if err, ok := f.Interface.(error); ok {
				cause += ": " + err.Error()
			}
		}
	}
	h.c.Catch(&Error{Component: h.component, Cause: cause, Code: 1})
}

// components maps package path prefixes to kubox's component names, most
// specific first.
var components = []struct{ prefix, name string }{
	{"k8s.io/kubernetes/cmd/kube-controller-manager", "controller-manager"},
	{"k8s.io/kubernetes/pkg/controller", "controller-manager"},
	{"k8s.io/kubernetes/cmd/kube-scheduler", "scheduler"},
	{"k8s.io/kubernetes/pkg/scheduler", "scheduler"},
	{"k8s.io/kubernetes/cmd/kubelet", "kubelet"},
	{"k8s.io/kubernetes/pkg/kubelet", "kubelet"},
	{"k8s.io/kubernetes/pkg/volume", "kubelet"},
	{"k8s.io/kubernetes/cmd/kube-proxy", "proxy"},
	{"k8s.io/kubernetes/pkg/proxy", "proxy"},
	{"k8s.io/kubernetes/cmd/kube-apiserver", "apiserver"},
	{"k8s.io/kubernetes/pkg/controlplane", "apiserver"},
	{"k8s.io/kubernetes/pkg/registry", "apiserver"},
	{"k8s.io/apiserver", "apiserver"},
	{"k8s.io/kube-aggregator", "apiserver"},
	{"k8s.io/apiextensions-apiserver", "apiserver"},
	{"go.etcd.io/etcd", "etcd"},
	{"github.com/coredns", "dns"},
	{"github.com/kubox/kubox/embedded/", ""}, // the embedded/<name> package names it
	{"github.com/kubox/kubox/services/", ""},
}

// CallerOf finds, in one goroutine's stack as runtime.Stack prints it, the
// first function outside klog, the runtime and this package, and returns
// the component it belongs to ("unknown component" when none matches any
// frame) and the function with its file:line.
func CallerOf(stack string) (component, where string) {
	lines := strings.Split(stack, "\n")
	for i := 0; i < len(lines); i++ {
		fn := strings.TrimSpace(lines[i])
		if fn == "" || strings.HasPrefix(fn, "goroutine ") || strings.HasPrefix(fn, "created by ") || strings.HasPrefix(lines[i], "\t") {
			continue
		}
		if skipFrame(fn) {
			continue
		}
		file := ""
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			file = strings.TrimSpace(lines[i+1])
			if j := strings.LastIndex(file, " +0x"); j > 0 {
				file = file[:j]
			}
			file = shortFile(file)
		}
		if where == "" {
			where = funcName(fn)
			if file != "" {
				where += " (" + file + ")"
			}
		}
		if component = componentOf(fn); component != "" {
			return component, where
		}
	}
	return "unknown component", where
}

func skipFrame(fn string) bool {
	for _, p := range []string{"k8s.io/klog/", "runtime.", "runtime/debug.", "github.com/kubox/kubox/internal/fatal."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

func componentOf(fn string) string {
	for _, c := range components {
		if !strings.HasPrefix(fn, c.prefix) {
			continue
		}
		if c.name != "" {
			return c.name
		}
		rest := strings.TrimPrefix(fn, c.prefix)
		if i := strings.IndexAny(rest, "./"); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

// funcName drops the argument list: "pkg.(*T).M(0x1, ...)" -> "pkg.(*T).M".
func funcName(fn string) string {
	if i := strings.LastIndex(fn, "("); i > 0 && strings.HasSuffix(fn, ")") {
		return fn[:i]
	}
	return fn
}

// shortFile keeps the last two path elements of a source file.
func shortFile(f string) string {
	parts := strings.Split(f, "/")
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, "/")
}
