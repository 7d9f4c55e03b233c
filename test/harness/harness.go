// Package harness starts real kubox servers for the end-to-end tests and
// benchmarks, drives them with the real kubectl, and cleans up every process,
// mount, link, nft table, cgroup and host file they leave, even when a test
// fails.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Env is what `make test-e2e` passes in.
type Env struct {
	Bin     string // bin/kubox
	Images  string // dir of test image archives
	Kubectl string // the real kubectl
}

// Require returns the environment or skips the test with the reason.
func Require(tb testing.TB) Env {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("end-to-end tests need root (they run containers and change networking)")
	}
	env := Env{Bin: os.Getenv("KUBOX_BIN"), Images: os.Getenv("KUBOX_TEST_IMAGES"), Kubectl: os.Getenv("KUBECTL")}
	if env.Bin == "" {
		tb.Skip("KUBOX_BIN is not set: run the end-to-end tests with `make test-e2e`")
	}
	if env.Kubectl == "" {
		env.Kubectl = "/usr/bin/kubectl"
	}
	if _, err := os.Stat(env.Kubectl); err != nil {
		tb.Fatalf("real kubectl not found at %s (set KUBECTL): %v", env.Kubectl, err)
	}
	return env
}

// Node is one `kubox server` process and its dirs.
type Node struct {
	tb         testing.TB
	env        Env
	Root       string // temp dir holding everything below
	DataDir    string
	RunDir     string
	Kubeconfig string
	LogPath    string
	// ManifestsDir is the node's manifests dir (missing until a test makes it).
	ManifestsDir string
	Args         []string
	// Netns, if set, is the name of the network namespace the server and
	// the commands run against it (kubectl, other kubox verbs) run in;
	// Hostname, if set too, the hostname they see (a UTS namespace of their own).
	Netns    string
	Hostname string
	// Env is added to the server's environment (e.g. KUBOX_TOKEN).
	Env []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

// hostLock is held by every test process that runs nodes: nodes of separate
// `go test` runs would fight over ports, the bridge and the kubelet's fixed
// host paths, so such runs take turns. A process takes it once, on its first
// node, and keeps it until it exits (flock locks end with the process).
const hostLock = "/run/kubox-e2e.lock"

var (
	lockHostOnce sync.Once
	lockHostErr  error
	// lockHostFile keeps the locked file reachable: an unreachable *os.File
	// is closed by its finalizer, which would drop the lock.
	lockHostFile *os.File
)

// lockHost blocks until this process holds the host lock.
func lockHost(tb testing.TB) {
	lockHostOnce.Do(func() {
		f, err := os.OpenFile(hostLock, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			lockHostErr = err
			return
		}
		lockHostFile = f
		lockHostErr = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	})
	if lockHostErr != nil {
		tb.Fatalf("lock %s: %v", hostLock, lockHostErr)
	}
}

// NewNode prepares dirs for a server and registers the host cleanup. It
// waits for other test processes' nodes to finish first.
func NewNode(tb testing.TB, env Env, extraArgs ...string) *Node {
	tb.Helper()
	return NewNodeWith(tb, env, NodeOptions{}, extraArgs...)
}

// NodeOptions change what NewNode sets up.
type NodeOptions struct {
	// NoHostRestore skips recording and restoring the host's state (pod
	// cgroups, sysctls, links, ...) for a node that starts no agent, such
	// as a join that must be refused: its cleanup would otherwise kill the
	// pods of other nodes still running in the test.
	NoHostRestore bool
}

// NewNodeWith is NewNode with options.
func NewNodeWith(tb testing.TB, env Env, opts NodeOptions, extraArgs ...string) *Node {
	tb.Helper()
	lockHost(tb)
	root, err := os.MkdirTemp("", "kubox-e2e-")
	if err != nil {
		tb.Fatal(err)
	}
	n := &Node{
		tb: tb, env: env, Root: root,
		DataDir:    filepath.Join(root, "data"),
		RunDir:     filepath.Join(root, "run"),
		Kubeconfig: filepath.Join(root, "admin.kubeconfig"),
		LogPath:    filepath.Join(root, "kubox.log"),
		// Never the host's /etc/kubox/manifests.
		ManifestsDir: filepath.Join(root, "manifests"),
	}
	// Cluster DNS forwards to no upstream unless a test says so (a later
	// --resolv-conf wins): tests send traffic only to addresses they own.
	noUpstreams := filepath.Join(root, "resolv.conf")
	if err := os.WriteFile(noUpstreams, []byte("# no upstream resolvers in tests\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	n.Args = append([]string{"server", "--data-dir", n.DataDir, "--run-dir", n.RunDir, "--write-kubeconfig", n.Kubeconfig,
		"--resolv-conf", noUpstreams, "--dns-config", filepath.Join(root, "dns.conf"), "--manifests-dir", n.ManifestsDir}, extraArgs...)
	host := SnapshotHost()
	tb.Cleanup(func() {
		if tb.Failed() {
			n.DumpLog(200)
		}
		n.Kill()
		if opts.NoHostRestore {
			for _, pid := range n.Processes() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		} else {
			for _, e := range host.Restore(n) {
				tb.Errorf("cleanup: %v", e)
			}
		}
		if err := os.RemoveAll(root); err != nil {
			tb.Errorf("cleanup: remove %s: %v", root, err)
		}
	})
	return n
}

// InNetns makes the node a box of its own: the server, n.Kubectl and
// n.Kubox run in network namespace ns, with hostname if not "".
func (n *Node) InNetns(ns *Netns, hostname string) {
	n.Netns, n.Hostname = ns.Name, hostname
}

// Start runs kubox server in the background.
func (n *Node) Start() {
	n.tb.Helper()
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.tb.Fatal(err)
	}
	cmd := n.command(context.Background(), n.env.Bin, n.Args...)
	cmd.Env = append(os.Environ(), n.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.tb.Fatalf("start kubox: %v", err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(exited)
	}()
}

// Stop sends SIGTERM and waits up to timeout; it returns how long the stop
// took and the process's exit error.
func (n *Node) Stop(timeout time.Duration) (time.Duration, error) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return 0, nil
	}
	begin := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		n.mu.Lock()
		defer n.mu.Unlock()
		n.cmd = nil
		return time.Since(begin), n.exitErr
	case <-time.After(timeout):
		return time.Since(begin), fmt.Errorf("kubox did not exit within %s of SIGTERM", timeout)
	}
}

// Exited tells whether the server process has ended, and how.
func (n *Node) Exited() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exited == nil {
		return false, nil
	}
	select {
	case <-n.exited:
		return true, n.exitErr
	default:
		return false, nil
	}
}

// Kill ends the server and everything it started, however it is doing.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	for _, pid := range n.Processes() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Processes lists live processes started for this node: any whose command
// line names its data or run dir (the kubelet child, containerd, shims).
func (n *Node) Processes() []int {
	return ProcessesMentioning(n.DataDir, n.RunDir)
}

// Kubectl runs the real kubectl against this node.
func (n *Node) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := n.command(ctx, n.env.Kubectl, append([]string{"--kubeconfig", n.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// command runs bin in the node's network namespace, if it has one.
func (n *Node) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	if n.Netns == "" {
		return exec.CommandContext(ctx, bin, args...)
	}
	// nsenter, not `ip netns exec`: that one mounts a fresh /sys, which
	// hides the cgroup mounts the kubelet needs.
	argv := (&Netns{Name: n.Netns}).Command(n.Hostname, append([]string{bin}, args...)...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// WaitExit waits up to timeout for the server to end and returns its exit error.
func (n *Node) WaitExit(timeout time.Duration) (bool, error) {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false, nil
	}
	select {
	case <-exited:
		n.mu.Lock()
		defer n.mu.Unlock()
		n.cmd = nil
		return true, n.exitErr
	case <-time.After(timeout):
		return false, nil
	}
}

// WaitAPIReady polls the apiserver's /readyz through kubectl.
func (n *Node) WaitAPIReady(ctx context.Context) error {
	var last error
	for {
		_, err := n.Kubectl(ctx, "get", "--raw", "/readyz")
		if err == nil {
			return nil
		}
		last = err
		if done, exitErr := n.Exited(); done {
			return fmt.Errorf("kubox exited before its apiserver was ready: %v", exitErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Kubox runs another verb of the kubox binary.
func (n *Node) Kubox(ctx context.Context, args ...string) (string, error) {
	out, err := n.command(ctx, n.env.Bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubox %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ImportImage loads an image archive from the test images dir into the
// node's containerd with the embedded ctr.
func (n *Node) ImportImage(ctx context.Context, name string) error {
	_, err := n.Kubox(ctx, "ctr", "--address", filepath.Join(n.RunDir, "containerd", "containerd.sock"),
		"-n", "k8s.io", "images", "import", filepath.Join(n.env.Images, name))
	return err
}

// WaitNodeReady polls with kubectl until the node is Ready.
func (n *Node) WaitNodeReady(ctx context.Context) error {
	var last string
	for {
		out, err := n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err == nil && strings.Contains(out, "=True") {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = out
		}
		if done, exitErr := n.Exited(); done {
			return fmt.Errorf("kubox exited before the node was Ready: %v", exitErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node not Ready: %w (last: %s)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DumpLog prints the last lines of the server's log into the test output.
func (n *Node) DumpLog(lines int) {
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		return
	}
	all := strings.Split(string(data), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	n.tb.Logf("last %d lines of %s:\n%s", len(all), n.LogPath, strings.Join(all, "\n"))
}

// Pid is the server process's pid, or 0.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// LockHost waits for this process to hold the host lock, for tests and
// benchmarks that change the host's networking without running a node.
func LockHost(tb testing.TB) {
	tb.Helper()
	lockHost(tb)
}
