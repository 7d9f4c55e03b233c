package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kubox/kubox/test/harness"
)

// runServer runs `kubox server` expecting it to refuse at once; it returns
// the combined output.
func runServer(t *testing.T, env harness.Env, cred *syscall.Credential, args ...string) string {
	t.Helper()
	cmd := exec.Command(env.Bin, append([]string{"server"}, args...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("kubox server %v succeeded; want a refusal. Output:\n%s", args, out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("kubox server %v: %v; want a non-zero exit", args, err)
	}
	return strings.TrimSpace(string(out))
}

// TestServerRefusesBadInput: each mistake gives one clear line, a non-zero
// exit, and no state is created.
func TestServerRefusesBadInput(t *testing.T) {
	env := harness.Require(t)
	root := t.TempDir()
	data := filepath.Join(root, "data")
	kc := filepath.Join(root, "admin.kubeconfig")
	base := []string{"--data-dir", data, "--run-dir", filepath.Join(root, "run"), "--write-kubeconfig", kc}

	badConfig := filepath.Join(root, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("cluster-cidr: 10.42.0.0/16\nclustr-dns: 10.43.0.10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Something else holds a port kubox needs.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busyPort := l.Addr().(*net.TCPAddr).Port

	cases := []struct {
		name string
		args []string
		cred *syscall.Credential
		want string
	}{
		{"unknown config key", []string{"--config", badConfig}, nil, `unknown key "clustr-dns"`},
		{"missing named config", []string{"--config", filepath.Join(root, "nope.yaml")}, nil, "read config file"},
		{"invalid cluster CIDR", []string{"--cluster-cidr", "10.42.0.0/33"}, nil, "--cluster-cidr"},
		{"overlapping CIDRs", []string{"--cluster-cidr", "10.42.0.0/16", "--service-cidr", "10.42.128.0/20"}, nil, "overlap"},
		{"port in use", []string{"--etcd-client-port", strconv.Itoa(busyPort)}, nil, "already in use"},
		{"loopback node IP", []string{"--node-ip", "127.0.0.1"}, nil, "--node-ip"},
		{"non-root", nil, &syscall.Credential{Uid: 65534, Gid: 65534}, "must run as root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := runServer(t, env, c.cred, append(append([]string{}, base...), c.args...)...)
			if !strings.Contains(out, c.want) {
				t.Errorf("output %q does not mention %q", out, c.want)
			}
			if lines := strings.Count(out, "\n") + 1; lines != 1 {
				t.Errorf("want one line, got %d:\n%s", lines, out)
			}
			// Nothing was bootstrapped.
			for _, p := range []string{filepath.Join(data, "pki"), filepath.Join(data, "etcd"), kc} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was created by a refused start", p)
				}
			}
		})
	}
}

// TestServerRefusesLockedDataDir: a second kubox on the same data dir stops
// before touching it.
func TestServerRefusesLockedDataDir(t *testing.T) {
	env := harness.Require(t)
	root := t.TempDir()
	data := filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(data, "kubox.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("4242\n"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	out := runServer(t, env, nil, "--data-dir", data, "--run-dir", filepath.Join(root, "run"), "--write-kubeconfig", filepath.Join(root, "kc"))
	if !strings.Contains(out, "in use by another kubox (pid 4242") {
		t.Errorf("output %q does not name the lock holder", out)
	}
	if _, err := os.Stat(filepath.Join(data, "pki")); err == nil {
		t.Error("PKI created although the data dir was locked")
	}
}

// TestVersion: kubox version names every embedded component.
func TestVersion(t *testing.T) {
	env := harness.Require(t)
	out, err := exec.Command(env.Bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("kubox version: %v\n%s", err, out)
	}
	for _, want := range []string{"kubernetes   v1.36.3", "etcd         3.6.8", "containerd   v2.3.7", "runc         v1.5.2", "cni-plugins"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubox version output lacks %q:\n%s", want, out)
		}
	}
}
