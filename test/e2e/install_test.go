package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/test/harness"
)

// These tests run systemd/install.sh and the scripts it writes into a
// throw-away root (INSTALL_KUBOX_TEST_ROOT) with the real kubox binary.
// systemd is not PID 1 on this host, so systemctl is a recorder that keeps
// the service's enabled/active state in files; the real systemd is tested
// in the VM (test/vm, make test-vm).

const fakeSystemctl = `#!/bin/sh
echo "$*" >>"$FAKE_SYSTEMCTL_LOG"
case "$1" in
--version) echo "systemd 252 (252.39-1~deb12u1)" ;;
is-active) [ -f "$FAKE_SYSTEMCTL_STATE/active" ] ;;
is-enabled) [ -f "$FAKE_SYSTEMCTL_STATE/enabled" ] ;;
enable) touch "$FAKE_SYSTEMCTL_STATE/enabled" ;;
disable) rm -f "$FAKE_SYSTEMCTL_STATE/enabled" ;;
start | restart) touch "$FAKE_SYSTEMCTL_STATE/active" ;;
stop) rm -f "$FAKE_SYSTEMCTL_STATE/active" ;;
esac
`

type installer struct {
	root   string // the throw-away root
	bin    string // dir with the fake systemctl, first on PATH
	state  string
	log    string
	script string
	kubox  string
}

func newInstaller(t *testing.T) *installer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("install.sh refuses to run without root")
	}
	kubox := os.Getenv("KUBOX_BIN")
	if kubox == "" {
		t.Skip("KUBOX_BIN is not set: run the end-to-end tests with `make test-e2e`")
	}
	dir := t.TempDir()
	in := &installer{root: filepath.Join(dir, "root"), bin: filepath.Join(dir, "fakebin"),
		state: filepath.Join(dir, "state"), log: filepath.Join(dir, "systemctl.log"),
		script: repoPath(t, "systemd", "install.sh"), kubox: kubox}
	for _, d := range []string{filepath.Join(in.root, "run", "systemd", "system"), in.bin, in.state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(in.bin, "systemctl"), []byte(fakeSystemctl), 0o755); err != nil {
		t.Fatal(err)
	}
	return in
}

func repoPath(t *testing.T, elem ...string) string {
	p, err := filepath.Abs(filepath.Join(append([]string{"..", ".."}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// env is the environment a run sees: a clean one, so the host's own
// KUBOX_* or proxy variables do not end up in the env file.
func (in *installer) env(extra ...string) []string {
	return append([]string{
		"PATH=" + in.bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"INSTALL_KUBOX_TEST_ROOT=" + in.root,
		"FAKE_SYSTEMCTL_LOG=" + in.log, "FAKE_SYSTEMCTL_STATE=" + in.state,
	}, extra...)
}

// install runs install.sh from a dir holding the kubox binary (offline).
func (in *installer) install(env []string, args ...string) (string, error) {
	cmd := exec.Command("sh", append([]string{in.script}, args...)...)
	cmd.Env = in.env(env...)
	cmd.Dir = filepath.Dir(in.kubox)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (in *installer) offline(t *testing.T, args ...string) string {
	t.Helper()
	out, err := in.install([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true"}, args...)
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	return out
}

// systemctl returns the calls since the last look.
func (in *installer) systemctl() []string {
	data, _ := os.ReadFile(in.log)
	_ = os.Remove(in.log)
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" && l != "--version" {
			calls = append(calls, l)
		}
	}
	return calls
}

func (in *installer) path(p string) string { return filepath.Join(in.root, p) }

func (in *installer) read(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(in.path(p))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// files lists every file, dir and link below the root with its mode (and
// link target), skipping the dirs the test itself made.
func (in *installer) files() map[string]string {
	got := map[string]string{}
	_ = filepath.Walk(in.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(p, in.root)
		desc := fi.Mode().String()
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		got[rel] = desc
		return nil
	})
	return got
}

func TestInstallOfflineIntoRoot(t *testing.T) {
	in := newInstaller(t)
	harness.Phase(t, "first-install", func(t *testing.T) {
		out := in.offline(t, "--node-name", "box 1", "--data-dir=/srv/kubox")
		t.Logf("install.sh:\n%s", out)
		want := map[string]string{
			"/usr/local/bin/kubox":                  "-rwxr-xr-x",
			"/usr/local/bin/kubectl":                "Lrwxrwxrwx -> /usr/local/bin/kubox",
			"/usr/local/bin/ctr":                    "Lrwxrwxrwx -> /usr/local/bin/kubox",
			"/usr/local/bin/kubox-killall.sh":       "-rwxr-xr-x",
			"/usr/local/bin/kubox-uninstall.sh":     "-rwxr-xr-x",
			"/etc/systemd/system/kubox.service":     "-rw-r--r--",
			"/etc/systemd/system/kubox.service.env": "-rw-------",
		}
		got := in.files()
		for p, mode := range want {
			if got[p] != mode {
				t.Errorf("%s: %q, want %q", p, got[p], mode)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("unexpected %s (%s)", p, got[p])
			}
		}
		// kubox carries no crictl: no link, and the installer says so.
		if !strings.Contains(out, "crictl: not linked") {
			t.Errorf("install.sh did not say why crictl is not linked")
		}
		if same, _ := sameFile(in.kubox, in.path("/usr/local/bin/kubox")); !same {
			t.Error("installed kubox differs from the source binary")
		}
		unit := in.read(t, "/etc/systemd/system/kubox.service")
		for _, line := range []string{
			`ExecStart=/usr/local/bin/kubox server --stop-pods-on-exit=false "--node-name" "box 1" "--data-dir=/srv/kubox"`,
			"Type=notify", "KillMode=process", "Delegate=yes", "LimitNOFILE=1048576", "TasksMax=infinity",
			"Restart=always", "RestartPreventExitStatus=78", "TimeoutStartSec=15min", "EnvironmentFile=-/etc/systemd/system/kubox.service.env",
		} {
			if !strings.Contains(unit, "\n"+line+"\n") {
				t.Errorf("unit lacks %q:\n%s", line, unit)
			}
		}
		// The scripts know the data dir the server was given.
		for _, s := range []string{"/usr/local/bin/kubox-killall.sh", "/usr/local/bin/kubox-uninstall.sh"} {
			if !strings.Contains(in.read(t, s), "DATA_DIR='/srv/kubox'") {
				t.Errorf("%s does not name the data dir /srv/kubox", s)
			}
		}
		if calls := strings.Join(in.systemctl(), "|"); calls != "daemon-reload|is-enabled --quiet kubox|enable kubox|is-active --quiet kubox|start kubox" {
			t.Errorf("systemctl calls on first install: %s", calls)
		}
	})

	harness.Phase(t, "same-again-changes-nothing", func(t *testing.T) {
		// Same binary, same args: nothing written, nothing restarted.
		before := mtimes(t, in.root)
		out := in.offline(t, "--node-name", "box 1", "--data-dir=/srv/kubox")
		if calls := strings.Join(in.systemctl(), "|"); calls != "is-enabled --quiet kubox|is-active --quiet kubox" {
			t.Errorf("second install called systemctl: %s\n%s", calls, out)
		}
		if after := mtimes(t, in.root); after != before {
			t.Errorf("second install changed files:\n%s\nthen\n%s", before, after)
		}
		if !strings.Contains(out, "nothing changed") {
			t.Errorf("second install did not say nothing changed:\n%s", out)
		}
	})

	harness.Phase(t, "new-args-restart", func(t *testing.T) {
		// New arguments: the unit changes and the running service restarts.
		in.offline(t, "--node-name", "box-2", "--data-dir=/srv/kubox")
		if calls := strings.Join(in.systemctl(), "|"); calls != "daemon-reload|is-enabled --quiet kubox|is-active --quiet kubox|restart kubox" {
			t.Errorf("systemctl calls after new args: %s", calls)
		}
	})

	harness.Phase(t, "uninstall", func(t *testing.T) {
		// Uninstall: says what it removes, then removes everything, including
		// the data dir (inside the test root).
		if err := os.MkdirAll(in.path("/srv/kubox/etcd"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(in.path("/etc/kubox"), 0o755); err != nil {
			t.Fatal(err)
		}
		// Empty dirs the kubelet, containerd and libcni make at their default
		// places go; /opt itself and anything not empty stay.
		for _, d := range []string{"/opt/containerd/bin", "/opt/containerd/lib", "/opt/other", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "/var/lib/cni/results"} {
			if err := os.MkdirAll(in.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(in.path("/var/lib/cni/results/other-net-1"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(in.path("/usr/local/bin/kubox-uninstall.sh"))
		cmd.Env = in.env()
		uout, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("uninstall: %v\n%s", err, uout)
		}
		for _, p := range []string{"/usr/local/bin/kubox", "/usr/local/bin/kubectl", "/etc/systemd/system/kubox.service", "/srv/kubox", "/etc/kubox"} {
			if !strings.Contains(string(uout), "  "+p+"\n") {
				t.Errorf("uninstall did not list %s:\n%s", p, uout)
			}
		}
		if left := in.files(); len(left) != 1 {
			t.Errorf("left after uninstall: %v; want only another network's CNI result", left)
		}
		for _, d := range []string{"/srv/kubox", "/etc/kubox", "/opt/containerd", "/usr/libexec/kubernetes"} {
			if _, err := os.Stat(in.path(d)); !os.IsNotExist(err) {
				t.Errorf("%s still there after uninstall", d)
			}
		}
		for _, p := range []string{"/opt/other", "/var/lib/cni/results/other-net-1"} {
			if _, err := os.Stat(in.path(p)); err != nil {
				t.Errorf("uninstall removed %s, which is not kubox's: %v", p, err)
			}
		}
		if calls := strings.Join(in.systemctl(), "|"); calls != "disable kubox|stop kubox|daemon-reload|reset-failed kubox" {
			t.Errorf("systemctl calls on uninstall: %s", calls)
		}
	})
}

func TestUninstallKeepData(t *testing.T) {
	in := newInstaller(t)
	in.offline(t)
	if err := os.MkdirAll(in.path("/var/lib/kubox/snapshots"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.path("/var/lib/kubox/snapshots/s1.kubox"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(in.path("/usr/local/bin/kubox-uninstall.sh"), "--keep-data")
	cmd.Env = in.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("uninstall --keep-data: %v\n%s", err, out)
	}
	got := in.files()
	if len(got) != 1 || got["/var/lib/kubox/snapshots/s1.kubox"] == "" {
		t.Errorf("after uninstall --keep-data: %v; want only the snapshot", got)
	}
}

func TestInstallLeavesTakenToolNamesAlone(t *testing.T) {
	in := newInstaller(t)
	// Another kubectl on PATH (inside the root).
	if err := os.MkdirAll(in.path("/usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.path("/usr/bin/kubectl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := in.offline(t)
	if _, err := os.Lstat(in.path("/usr/local/bin/kubectl")); !os.IsNotExist(err) {
		t.Errorf("kubectl linked although /usr/bin/kubectl exists")
	}
	if !strings.Contains(out, "kubectl: not linked: /usr/bin/kubectl exists") {
		t.Errorf("no word about the taken kubectl:\n%s", out)
	}
	if fi, err := os.Lstat(in.path("/usr/local/bin/ctr")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("ctr not linked: %v", err)
	}
	// The uninstall removes only its own links.
	cmd := exec.Command(in.path("/usr/local/bin/kubox-uninstall.sh"))
	cmd.Env = in.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if _, err := os.Stat(in.path("/usr/bin/kubectl")); err != nil {
		t.Errorf("uninstall removed a kubectl it did not install: %v", err)
	}
}

func TestInstallSkipStartAndEnable(t *testing.T) {
	in := newInstaller(t)
	out, err := in.install([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true", "INSTALL_KUBOX_SKIP_START=true", "INSTALL_KUBOX_SKIP_ENABLE=true"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if calls := strings.Join(in.systemctl(), "|"); calls != "daemon-reload" {
		t.Errorf("systemctl calls with SKIP_START and SKIP_ENABLE: %s", calls)
	}
}

func TestInstallEnvFile(t *testing.T) {
	in := newInstaller(t)
	in.offline(t) // a first install, so the second one is a change
	in.systemctl()
	tricky := `a"b$c` + "`d\\e f"
	out, err := in.install([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true", "KUBOX_TOKEN=" + tricky,
		"HTTPS_PROXY=http://proxy:3128", "no_proxy=10.0.0.0/8", "OTHER=x", "INSTALL_KUBOX_VERSION=v9"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	env := in.read(t, "/etc/systemd/system/kubox.service.env")
	// A proxy is set: NO_PROXY and no_proxy get kubox's own ranges after
	// what the user set.
	noProxy := `"10.0.0.0/8,10.42.0.0/16,10.43.0.0/16,localhost,127.0.0.1,.svc,.cluster.local"`
	want := "HTTPS_PROXY=\"http://proxy:3128\"\nKUBOX_TOKEN=\"a\\\"b\\$c\\`d\\\\e f\"\nNO_PROXY=" + noProxy + "\nno_proxy=" + noProxy + "\n"
	if env != want {
		t.Errorf("env file\n got %q\nwant %q", env, want)
	}
	if strings.Contains(out, tricky) {
		t.Errorf("the installer printed the token")
	}
	if calls := strings.Join(in.systemctl(), "|"); !strings.Contains(calls, "restart kubox") {
		t.Errorf("a changed env file did not restart kubox: %s", calls)
	}
	// systemd reads the file back as it was given (checked by systemd's
	// own parser where systemd-analyze is installed is not possible for env
	// files; the shell, which uses the same escapes in double quotes, is).
	cmd := exec.Command("sh", "-c", `set -a; . "$1"; printf %s "$KUBOX_TOKEN"`, "sh", in.path("/etc/systemd/system/kubox.service.env"))
	if got, err := cmd.Output(); err != nil || string(got) != tricky {
		t.Errorf("env file value reads back as %q (%v), want %q", got, err, tricky)
	}
}

// release serves a kubox release over https as install.sh expects it:
// <base>/latest, <base>/<version>/kubox-linux-amd64 and sha256sums.txt.
// Version v6.6.6's binary is a redirect to plain http (served by plain,
// whose requests are recorded too).
type releaseServer struct {
	*httptest.Server
	mu          sync.Mutex
	paths       []string // requested over https
	plainPaths  []string // requested over plain http
	caEnv       []string // the environment curl and wget need to trust the server
	plainServer *httptest.Server
}

func (r *releaseServer) record(list *[]string, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*list = append(*list, path)
}

func (r *releaseServer) fetched() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := strings.Join(r.paths, " ")
	r.paths = nil
	return got
}

func release(t *testing.T, binary string, sum string) *releaseServer {
	rel := &releaseServer{}
	rel.plainServer = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel.record(&rel.plainPaths, r.URL.Path)
		http.ServeFile(w, r, binary)
	}))
	t.Cleanup(rel.plainServer.Close)
	rel.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel.record(&rel.paths, r.URL.Path)
		switch r.URL.Path {
		case "/releases/latest":
			fmt.Fprintln(w, "v1.2.3")
		case "/releases/v1.2.3/sha256sums.txt", "/releases/v0.9.0/sha256sums.txt", "/releases/v6.6.6/sha256sums.txt":
			fmt.Fprintf(w, "0000  kubox-linux-arm64\n%s  kubox-linux-amd64\n", sum)
		case "/releases/v1.2.3/kubox-linux-amd64", "/releases/v0.9.0/kubox-linux-amd64":
			http.ServeFile(w, r, binary)
		case "/releases/v6.6.6/kubox-linux-amd64":
			http.Redirect(w, r, rel.plainServer.URL+r.URL.Path, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(rel.Server.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	wgetrc := filepath.Join(dir, "wgetrc")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rel.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wgetrc, []byte("ca_certificate = "+ca+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel.caEnv = []string{"CURL_CA_BUNDLE=" + ca, "WGETRC=" + wgetrc}
	return rel
}

func (r *releaseServer) env(extra ...string) []string {
	return append(append([]string{"INSTALL_KUBOX_BASE_URL=" + r.URL + "/releases"}, r.caEnv...), extra...)
}

func fileSHA256(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestInstallDownloadsAndVerifies(t *testing.T) {
	in := newInstaller(t)
	rel := release(t, in.kubox, fileSHA256(t, in.kubox))
	out, err := in.install(rel.env())
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := rel.fetched(); got != "/releases/latest /releases/v1.2.3/sha256sums.txt /releases/v1.2.3/kubox-linux-amd64" {
		t.Errorf("fetched %s", got)
	}
	if same, _ := sameFile(in.kubox, in.path("/usr/local/bin/kubox")); !same {
		t.Error("installed kubox differs from the released one")
	}
	if out, err := in.install(rel.env("INSTALL_KUBOX_VERSION=v0.9.0")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := rel.fetched(); got != "/releases/v0.9.0/sha256sums.txt /releases/v0.9.0/kubox-linux-amd64" {
		t.Errorf("pinned version fetched %s", got)
	}
}

func TestInstallRefusesChecksumMismatch(t *testing.T) {
	in := newInstaller(t)
	rel := release(t, in.kubox, strings.Repeat("ab", 32))
	out, err := in.install(rel.env())
	if err == nil {
		t.Fatalf("install.sh accepted a binary with the wrong checksum:\n%s", out)
	}
	if !strings.Contains(out, "checksum mismatch for kubox-linux-amd64") {
		t.Errorf("unclear refusal:\n%s", out)
	}
	if got := in.files(); len(got) != 0 {
		t.Errorf("files written despite the mismatch: %v", got)
	}
	if calls := in.systemctl(); len(calls) != 0 {
		t.Errorf("systemctl called despite the mismatch: %v", calls)
	}
}

func TestInstallRefusals(t *testing.T) {
	in := newInstaller(t)
	// Not systemd: the root has no /run/systemd/system.
	noSystemd := t.TempDir()
	fakeUname := filepath.Join(t.TempDir(), "uname")
	if err := os.WriteFile(fakeUname, []byte("#!/bin/sh\n[ \"$1\" = -s ] && echo FreeBSD || echo amd64\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := "setpriv --reuid=65534 --regid=65534 --clear-groups"
	for _, c := range []struct {
		name, wrap, want string
		env              []string
	}{
		{"not systemd", "", "this host does not run systemd", []string{"INSTALL_KUBOX_TEST_ROOT=" + noSystemd}},
		{"not root", nobody, "run this as root", nil},
		{"not Linux", "", "kubox runs on Linux only; this is FreeBSD", []string{"PATH=" + filepath.Dir(fakeUname) + ":" + in.bin + ":/usr/bin:/bin"}},
		{"no binary offline", "", "INSTALL_KUBOX_SKIP_DOWNLOAD is set but there is no kubox binary next to this script", []string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			script := in.script
			if c.wrap != "" {
				// Readable by nobody: a copy outside root's temp dirs.
				script = filepath.Join(os.TempDir(), fmt.Sprintf("kubox-install-test-%d.sh", os.Getpid()))
				data, _ := os.ReadFile(in.script)
				if err := os.WriteFile(script, data, 0o755); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(script)
			}
			args := append(strings.Fields(c.wrap), "sh", script)
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(in.env(), c.env...)
			cmd.Dir = "/" // no ./kubox here, and nobody may enter it
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("install.sh did not refuse:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if last := lines[len(lines)-1]; !strings.Contains(last, "ERROR: "+c.want) {
				t.Errorf("last line %q, want one naming %q", last, c.want)
			}
			if got := in.files(); len(got) != 0 {
				t.Errorf("files written: %v", got)
			}
		})
	}
}

// The installer and the scripts it writes are POSIX sh that shellcheck
// passes, and the unit is one that systemd-analyze verify accepts (it
// exits 0 even for a broken unit, so its output is what counts).
func TestInstallScriptsShellcheckAndUnitVerifies(t *testing.T) {
	in := newInstaller(t)
	in.offline(t, "--node-name", "box 1")
	shellcheck, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed: apt-get install shellcheck")
	}
	for _, s := range []string{in.script, in.path("/usr/local/bin/kubox-killall.sh"), in.path("/usr/local/bin/kubox-uninstall.sh"), repoPath(t, "test", "vm", "systemd-guest", "vm-test.sh"), repoPath(t, "hack", "vm", "mkrootfs.sh")} {
		if out, err := exec.Command(shellcheck, "-s", "sh", s).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", s, err, out)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: apt-get install systemd")
	}
	// verify checks that ExecStart's binary exists on this host: point it
	// at the installed copy.
	unit := strings.ReplaceAll(in.read(t, "/etc/systemd/system/kubox.service"), "/usr/local/bin/kubox", in.path("/usr/local/bin/kubox"))
	dir := t.TempDir()
	good := filepath.Join(dir, "kubox.service")
	if err := os.WriteFile(good, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", good).CombinedOutput(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	// The check itself: a broken copy must produce output.
	bad := filepath.Join(dir, "kubox-bad.service")
	broken := strings.Replace(strings.Replace(unit, "Type=notify", "Type=notfy", 1), "KillMode=", "KilMode=", 1)
	if err := os.WriteFile(bad, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "notfy") || !strings.Contains(string(out), "KilMode") {
		t.Errorf("systemd-analyze verify did not flag a broken unit:\n%s", out)
	}
}

func sameFile(a, b string) (bool, error) {
	da, err := os.ReadFile(a)
	if err != nil {
		return false, err
	}
	db, err := os.ReadFile(b)
	if err != nil {
		return false, err
	}
	return string(da) == string(db), nil
}

func mtimes(t *testing.T, root string) string {
	var b strings.Builder
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			fmt.Fprintf(&b, "%s %s %d\n", p, fi.ModTime().Format("15:04:05.000000000"), fi.Size())
		}
		return nil
	})
	return b.String()
}

// kubox-killall.sh cleans what killed shims leave where containerd
// hard-codes it, but only for kubox's own tasks (found in kubox's run dir).
// Processes are matched by their executable under the test root, so none
// on this host is touched.
func TestKillallCleansShimLeftovers(t *testing.T) {
	in := newInstaller(t)
	in.offline(t)
	task := in.path("/run/kubox/containerd/io.containerd.runtime.v2.task/k8s.io/abc123")
	files := map[string]string{
		task + "/bootstrap.json":                                 `{"version":3,"address":"unix:///run/containerd/s/feed","protocol":"ttrpc"}`,
		in.path("/run/containerd/s/feed"):                        "",
		in.path("/run/containerd/s/other"):                       "", // another containerd's shim
		in.path("/var/lib/cni/results/cni-loopback-abc123-lo"):   "{}",
		in.path("/var/lib/cni/results/cni-loopback-zzz999-lo"):   "{}",
		in.path("/run/containerd/runc/k8s.io/abc123/state.json"): "{}",
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(in.path("/usr/local/bin/kubox-killall.sh"))
	cmd.Env = in.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("killall: %v\n%s", err, out)
	}
	for _, p := range []string{"/run/containerd/s/feed", "/var/lib/cni/results/cni-loopback-abc123-lo", "/run/containerd/runc"} {
		if _, err := os.Stat(in.path(p)); !os.IsNotExist(err) {
			t.Errorf("%s left by killall", p)
		}
	}
	for _, p := range []string{"/run/containerd/s/other", "/var/lib/cni/results/cni-loopback-zzz999-lo"} {
		if _, err := os.Stat(in.path(p)); err != nil {
			t.Errorf("killall removed %s, which is not kubox's", p)
		}
	}
	if calls := strings.Join(in.systemctl(), "|"); !strings.HasSuffix(calls, "stop kubox") {
		t.Errorf("killall did not stop the service first: %s", calls)
	}
}

// pathWithout returns a PATH of one dir linking every command of the usual
// bin dirs but the given ones: install.sh run with it sees no such tool.
func pathWithout(t *testing.T, without ...string) string {
	dir := t.TempDir()
	seen := map[string]bool{}
	for _, w := range without {
		seen[w] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if seen[e.Name()] {
				continue
			}
			seen[e.Name()] = true
			if err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// Downloads are https only (TLS 1.2 or later) through curl or, where curl
// is missing, wget: a redirect to plain http and a plain http base are
// refused, and nothing is installed.
func TestInstallDownloadsHTTPSOnly(t *testing.T) {
	for _, c := range []struct {
		tool, redirectRefusal string
	}{
		{"curl", "/v6.6.6/kubox-linux-amd64 failed"},
		{"wget", "/v6.6.6/kubox-linux-amd64 was redirected to plain http: refused"},
	} {
		t.Run(c.tool, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("%s is not installed", c.tool)
			}
			in := newInstaller(t)
			rel := release(t, in.kubox, fileSHA256(t, in.kubox))
			var path []string
			if c.tool == "wget" {
				path = []string{"PATH=" + in.bin + ":" + pathWithout(t, "curl")}
			}
			refused := func(t *testing.T, out string, err error, want string) {
				t.Helper()
				if err == nil {
					t.Fatalf("install.sh did not refuse:\n%s", out)
				}
				if last := lastLine(out); !strings.Contains(last, "ERROR: ") || !strings.Contains(last, want) {
					t.Errorf("last line %q, want an ERROR naming %q", last, want)
				}
				if got := in.files(); len(got) != 0 {
					t.Errorf("files written: %v", got)
				}
				if calls := in.systemctl(); len(calls) != 0 {
					t.Errorf("systemctl called: %v", calls)
				}
			}
			harness.Phase(t, "redirect-to-http-refused", func(t *testing.T) {
				out, err := in.install(rel.env(append(path, "INSTALL_KUBOX_VERSION=v6.6.6")...))
				refused(t, out, err, c.redirectRefusal)
				// curl does not even ask; wget asks, and its answer is dropped.
				if c.tool == "curl" && len(rel.plainPaths) != 0 {
					t.Errorf("curl followed the redirect to plain http: %v", rel.plainPaths)
				}
			})
			harness.Phase(t, "plain-http-base-refused", func(t *testing.T) {
				out, err := in.install(append(path, "INSTALL_KUBOX_BASE_URL="+rel.plainServer.URL+"/releases"))
				refused(t, out, err, "not https")
			})
			harness.Phase(t, "https-installs", func(t *testing.T) {
				if out, err := in.install(rel.env(path...)); err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				if same, _ := sameFile(in.kubox, in.path("/usr/local/bin/kubox")); !same {
					t.Error("installed kubox differs from the released one")
				}
			})
		})
	}
}

// INSTALL_KUBOX_SHA256 pins the binary, offline or downloaded: another one
// is refused with one line; the binary's sha256 is always printed.
func TestInstallSHA256Pin(t *testing.T) {
	in := newInstaller(t)
	sum := fileSHA256(t, in.kubox)
	other := strings.Repeat("0", 64)
	refused := func(t *testing.T, out string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("install.sh installed a binary whose sha256 is not INSTALL_KUBOX_SHA256:\n%s", out)
		}
		if n := strings.Count(out, "ERROR"); n != 1 {
			t.Errorf("%d error lines, want 1:\n%s", n, out)
		}
		if last := lastLine(out); !strings.Contains(last, "ERROR: sha256 mismatch") || !strings.Contains(last, sum) || !strings.Contains(last, other) {
			t.Errorf("last line %q, want the mismatch with both sums", last)
		}
		if got := in.files(); len(got) != 0 {
			t.Errorf("files written: %v", got)
		}
		if calls := in.systemctl(); len(calls) != 0 {
			t.Errorf("systemctl called: %v", calls)
		}
	}
	harness.Phase(t, "download-mismatch-refused", func(t *testing.T) {
		rel := release(t, in.kubox, sum)
		out, err := in.install(rel.env("INSTALL_KUBOX_SHA256=" + other))
		refused(t, out, err)
	})
	harness.Phase(t, "offline-mismatch-refused", func(t *testing.T) {
		out, err := in.install([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true", "INSTALL_KUBOX_SHA256=" + other})
		refused(t, out, err)
	})
	harness.Phase(t, "offline-match-accepted", func(t *testing.T) {
		out, err := in.install([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true", "INSTALL_KUBOX_SHA256=" + strings.ToUpper(sum)})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "[kubox] sha256 "+sum+" matches INSTALL_KUBOX_SHA256\n") {
			t.Errorf("no word of the match:\n%s", out)
		}
		if same, _ := sameFile(in.kubox, in.path("/usr/local/bin/kubox")); !same {
			t.Error("installed kubox differs from the source binary")
		}
	})
	harness.Phase(t, "printed-without-pin", func(t *testing.T) {
		if out := in.offline(t); !strings.Contains(out, "[kubox] sha256 "+sum+"\n") {
			t.Errorf("the binary's sha256 is not printed:\n%s", out)
		}
	})
}

// The env file may hold the join token: it is 0600 from its creation, before
// its first byte. A copy that fails half-way (its file system is full)
// leaves the partial file to look at.
func TestInstallEnvFileSecretFromCreation(t *testing.T) {
	in := newInstaller(t)
	dir := in.path("/etc/systemd/system")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("kubox-install-test", dir, "tmpfs", 0, "size=4k,mode=0755"); err != nil {
		t.Skipf("mount a 4 KiB tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	pad := strings.Repeat("x", 64<<10)
	// The usual umask, with which a file made then chmod-ed is 0644 at first.
	cmd := exec.Command("sh", "-c", `umask 022 && exec sh "$@"`, "sh", in.script)
	cmd.Env = in.env("INSTALL_KUBOX_SKIP_DOWNLOAD=true", "KUBOX_TOKEN=secret", "KUBOX_PAD="+pad)
	cmd.Dir = filepath.Dir(in.kubox)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("install.sh wrote a 64 KiB env file into a 4 KiB file system:\n%s", out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("want one partial env file in %s, found %v:\n%s", dir, entries, out)
	}
	fi, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 || fi.Size() >= int64(len(pad)) {
		t.Errorf("%s: %d bytes, want a partial copy", fi.Name(), fi.Size())
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s: mode %o half-way through the copy, want 600", fi.Name(), mode)
	}
}

// A --token argument goes into the env file (0600) as KUBOX_TOKEN, which
// kubox server reads, and never into the unit that every user can read.
func TestInstallTokenNotInUnit(t *testing.T) {
	for _, c := range []struct {
		name, token, execStart string
		args, env              []string
	}{
		{"separate", "K10aaa::server:bbb", `ExecStart=/usr/local/bin/kubox server --stop-pods-on-exit=false "--join" "https://box1:6443" "--node-name" "box2"`,
			[]string{"server", "--join", "https://box1:6443", "--token", "K10aaa::server:bbb", "--node-name", "box2"}, nil},
		{"equals, over KUBOX_TOKEN", "K10ccc::server:ddd", `ExecStart=/usr/local/bin/kubox server --stop-pods-on-exit=false "--join=https://box1:6443"`,
			[]string{"--join=https://box1:6443", "--token=K10ccc::server:ddd"}, []string{"KUBOX_TOKEN=older"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := newInstaller(t)
			out, err := in.install(append([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true"}, c.env...), c.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if strings.Contains(out, c.token) {
				t.Errorf("the installer printed the token:\n%s", out)
			}
			unit := in.read(t, "/etc/systemd/system/kubox.service")
			if !strings.Contains(unit, "\n"+c.execStart+"\n") {
				t.Errorf("unit lacks %q:\n%s", c.execStart, unit)
			}
			if strings.Contains(unit, "--token") {
				t.Errorf("unit names --token:\n%s", unit)
			}
			// Nothing but the env file holds the token (the binary is
			// the one given).
			for p := range in.files() {
				if p == "/etc/systemd/system/kubox.service.env" || p == "/usr/local/bin/kubox" {
					continue
				}
				if data, _ := os.ReadFile(in.path(p)); strings.Contains(string(data), c.token) {
					t.Errorf("%s holds the token", p)
				}
			}
			env := in.read(t, "/etc/systemd/system/kubox.service.env")
			if env != "KUBOX_TOKEN=\""+c.token+"\"\n" {
				t.Errorf("env file %q, want KUBOX_TOKEN=%q only", env, c.token)
			}
			if got := in.files()["/etc/systemd/system/kubox.service.env"]; got != "-rw-------" {
				t.Errorf("env file mode %s, want -rw-------", got)
			}
		})
	}
}

// When a proxy is set, NO_PROXY and no_proxy get what kubox reaches
// directly (from the arguments, the config file or kubox's defaults), after
// what the user set and each once: the proxy never sees etcd peer, join,
// pod or Service traffic.
func TestInstallNoProxyComplemented(t *testing.T) {
	for _, c := range []struct {
		name, config, want string // want: NO_PROXY and no_proxy; "" for none
		env, args          []string
	}{
		{"HTTPS_PROXY", "", "localhost,corp.example,10.42.0.0/16,10.96.0.0/12,10.0.0.5,box1,127.0.0.1,.svc,.cluster.local",
			[]string{"HTTPS_PROXY=http://proxy:3128", "no_proxy=localhost, corp.example,"},
			[]string{"server", "--join", "https://box1:6443", "--node-ip", "10.0.0.5", "--service-cidr=10.96.0.0/12"}},
		{"http_proxy and the config file", "cluster-cidr: 10.60.0.0/16\ncluster-domain: \"kubox.lan\"\nservice-cidr: 10.70.0.0/16\n",
			".corp.example,10.60.0.0/16,10.71.0.0/16,fd00::1,localhost,127.0.0.1,.svc,.kubox.lan",
			[]string{"http_proxy=http://proxy:3128", "NO_PROXY=.corp.example"},
			[]string{"--join=https://[fd00::1]:6443/", "--service-cidr", "10.71.0.0/16"}},
		{"no proxy", "", "", []string{"KUBOX_X=1"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := newInstaller(t)
			if c.config != "" {
				if err := os.MkdirAll(in.path("/etc/kubox"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(in.path("/etc/kubox/config.yaml"), []byte(c.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := in.install(append([]string{"INSTALL_KUBOX_SKIP_DOWNLOAD=true"}, c.env...), c.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			env := in.read(t, "/etc/systemd/system/kubox.service.env")
			for _, name := range []string{"NO_PROXY", "no_proxy"} {
				line := name + `="` + c.want + `"`
				if c.want == "" {
					if strings.Contains(env, name+"=") {
						t.Errorf("%s set although no proxy is:\n%s", name, env)
					}
				} else if !strings.Contains(env, "\n"+line+"\n") && !strings.HasPrefix(env, line+"\n") {
					t.Errorf("env file lacks %s:\n%s", line, env)
				}
			}
		})
	}
}

// install.sh is run as `curl ... | sh -`: a copy cut short anywhere runs
// nothing. No command runs (sh -x traces none but `set -eu`), no file is
// written, systemctl is not called. Cut at every tenth of its length and at
// every byte of the line that calls main (but after its last character).
func TestInstallTruncatedScriptRunsNothing(t *testing.T) {
	in := newInstaller(t)
	script, err := os.ReadFile(in.script)
	if err != nil {
		t.Fatal(err)
	}
	var cuts []int
	for i := 1; i < 10; i++ {
		cuts = append(cuts, len(script)*i/10)
	}
	// The last line, short of at least its last character.
	end := len(bytes.TrimRight(script, " \t\n"))
	for c := bytes.LastIndexByte(script[:end], '\n') + 1; c < end; c++ {
		cuts = append(cuts, c)
	}
	run := func(shell string, code []byte) string {
		cmd := exec.Command(shell, "-x", "-s", "-", "server", "--token", "t0k3n")
		cmd.Stdin = bytes.NewReader(code)
		cmd.Env = in.env("INSTALL_KUBOX_SKIP_DOWNLOAD=true")
		cmd.Dir = filepath.Dir(in.kubox)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	shells := []string{"sh"}
	if _, err := exec.LookPath("bash"); err == nil {
		shells = append(shells, "bash")
	}
	for _, shell := range shells {
		t.Run(shell, func(t *testing.T) {
			for _, cut := range cuts {
				out := run(shell, script[:cut])
				for _, l := range strings.Split(out, "\n") {
					if strings.HasPrefix(l, "+") && l != "+ set -eu" {
						t.Errorf("cut at byte %d of %d: ran %q", cut, len(script), l)
						break
					}
				}
				if got := in.files(); len(got) != 0 {
					t.Fatalf("cut at byte %d of %d: files written: %v", cut, len(script), got)
				}
				if calls := in.systemctl(); len(calls) != 0 {
					t.Fatalf("cut at byte %d of %d: systemctl called: %v", cut, len(script), calls)
				}
			}
		})
	}
	// The check can fail: the whole script is traced running main.
	t.Run("whole", func(t *testing.T) {
		if out := run("sh", script); !strings.Contains(out, "\n+ main server --token t0k3n\n") {
			t.Errorf("the whole script did not run main:\n%s", out)
		}
		if len(in.files()) == 0 {
			t.Error("the whole script installed nothing")
		}
	})
}
