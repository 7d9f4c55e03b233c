package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/test/harness"
)

const (
	snapLabel      = "kubox-e2e=snapshot"
	snapSecretName = "snap-secret"
	snapMarker     = "kubox-snapshot-plaintext-marker-4f1c"
	restoredNode   = "snap-restored"
)

// kubox runs a kubox verb and returns stdout, stderr and the exit code.
func kubox(t *testing.T, env harness.Env, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(env.Bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run kubox %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func mustKubox(t *testing.T, env harness.Env, args ...string) string {
	t.Helper()
	out, errOut, code := kubox(t, env, args...)
	if code != 0 {
		t.Fatalf("kubox %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// snapConfigMaps is how many ConfigMaps the snapshot holds.
const snapConfigMaps = 500

// createConfigMaps creates ConfigMaps named prefix-<i> for i in [from, to)
// with client-go, several at a time (a kubectl apply of 500 takes long).
func createConfigMaps(ctx context.Context, t *testing.T, n *harness.Node, prefix string, from, to int) {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.SetLimit(8)
	for i := from; i < to; i++ {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", prefix, i), Labels: map[string]string{"kubox-e2e": "snapshot"}},
			Data:       map[string]string{"v": fmt.Sprintf("%s %d", snapMarker, i)},
		}
		g.Go(func() error {
			_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create ConfigMap %s: %w", cm.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// firstDiff names the first name in only one of two sorted lists.
func firstDiff(got, want []string) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return "missing " + want[i]
		case i >= len(want) || got[i] != want[i]:
			return "unexpected " + got[i]
		}
	}
	return "none"
}

func applyYAML(ctx context.Context, t *testing.T, n *harness.Node, name, yaml string) {
	t.Helper()
	p := filepath.Join(n.Root, name)
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", p); err != nil {
		t.Fatal(err)
	}
}

func configMapNames(ctx context.Context, t *testing.T, n *harness.Node) []string {
	t.Helper()
	out, err := n.Kubectl(ctx, "get", "configmaps", "-n", "default", "-l", snapLabel, "-o", `jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

// dirState lists every path under dir with its size and mode: what "nothing
// on disk changed" is checked against.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size := fi.Size()
		if d.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), size, fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func siblings(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// waitNamedNodeReady waits until node name is Ready and node gone no longer
// exists.
func waitNamedNodeReady(ctx context.Context, t *testing.T, n *harness.Node, name, gone string) {
	t.Helper()
	var last string
	for {
		out, err := n.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err == nil {
			lines := strings.Fields(out)
			ready := slices.Contains(lines, name+"=True")
			stale := slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, gone+"=") })
			if ready && !stale {
				return
			}
			last = out
		} else {
			last = err.Error()
		}
		if done, exitErr := n.Exited(); done {
			t.Fatalf("kubox exited before node %s was Ready: %v", name, exitErr)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("want node %s Ready and node %s gone; last: %s", name, gone, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestSnapshotRestore is the disaster-recovery story: snapshot a running
// cluster, change it, lose the box, restore the snapshot into a fresh data
// dir for a box with another name, and get exactly the snapshot's objects
// back with the same CAs.
func TestSnapshotRestore(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	host := harness.SnapshotHost()
	n1 := harness.NewNode(t, env)
	keyFile := filepath.Join(n1.Root, "backup.key")
	otherKey := filepath.Join(n1.Root, "other.key")
	snapDir := filepath.Join(n1.Root, "snapshots") // off the data dir, as on a USB stick
	snapArgs := []string{"--data-dir", n1.DataDir, "--snapshot-dir", snapDir, "--key-file", keyFile}

	harness.Phase(t, "key-create", func(t *testing.T) {
		out := mustKubox(t, env, "snapshot", "key", "create", "--key-file", keyFile)
		if !strings.Contains(out, keyFile) {
			t.Errorf("key create does not say where the key is: %q", out)
		}
		for f, mode := range map[string]os.FileMode{keyFile: 0o600, backup.SigningKeyFile(keyFile): 0o600, backup.PublicKeyFile(keyFile): 0o644} {
			if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != mode {
				t.Fatalf("key file %s: %v %v; want mode %#o", f, fi, err, mode)
			}
		}
		if _, errOut, code := kubox(t, env, "snapshot", "key", "create", "--key-file", keyFile); code == 0 || !strings.Contains(errOut, "refusing") {
			t.Errorf("key create over an existing key: exit %d, %q; want a refusal", code, errOut)
		}
		mustKubox(t, env, "snapshot", "key", "create", "--key-file", otherKey)
	})

	harness.Phase(t, "start", func(t *testing.T) {
		n1.Start()
		waitCtx, waitCancel := context.WithTimeout(ctx, 3*time.Minute)
		defer waitCancel()
		if err := n1.WaitNodeReady(waitCtx); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "save-refused-without-key", func(t *testing.T) {
		// No key, no snapshot (unless asked for in plaintext).
		if _, errOut, code := kubox(t, env, append([]string{"snapshot", "save", "--key-file", filepath.Join(n1.Root, "missing.key")}, snapArgs[:4]...)...); code == 0 || !strings.Contains(errOut, "insecure-plaintext") {
			t.Errorf("save without a key: exit %d, %q; want a refusal naming --insecure-plaintext", code, errOut)
		}
	})

	var want []string // the ConfigMaps at snapshot time
	harness.Phase(t, "workload", func(t *testing.T) {
		// A Deployment whose pods run on this box at snapshot time.
		if err := n1.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		applyYAML(ctx, t, n1, "web.yaml", webDeployment)
		waitWebPods(ctx, t, n1, 2, time.Time{})
		begin := time.Now()
		createConfigMaps(ctx, t, n1, "cm", 0, snapConfigMaps)
		t.Logf("created %d ConfigMaps in %s", snapConfigMaps, time.Since(begin).Round(time.Millisecond))
		if _, err := n1.Kubectl(ctx, "create", "secret", "generic", snapSecretName, "--from-literal=k="+snapMarker); err != nil {
			t.Fatal(err)
		}
		want = configMapNames(ctx, t, n1)
		if len(want) != snapConfigMaps {
			t.Fatalf("created %d ConfigMaps, listed %d", snapConfigMaps, len(want))
		}
	})

	var saved struct {
		Path, Node   string
		Size         int64
		EtcdRevision int64   `json:"etcd_revision"`
		EtcdDBSize   int64   `json:"etcd_db_size"`
		Duration     float64 `json:"duration_seconds"`
	}
	var data []byte // the snapshot file
	harness.Phase(t, "save", func(t *testing.T) {
		out := mustKubox(t, env, append([]string{"snapshot", "save", "--name", "e2e", "-o", "json"}, snapArgs...)...)
		if err := json.Unmarshal([]byte(out), &saved); err != nil {
			t.Fatalf("snapshot save -o json: %v\n%s", err, out)
		}
		t.Logf("snapshot %s: %d bytes (etcd db %d at revision %d) in %.3fs", saved.Path, saved.Size, saved.EtcdDBSize, saved.EtcdRevision, saved.Duration)
		var err error
		data, err = os.ReadFile(saved.Path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(snapMarker)) || bytes.Contains(data, []byte("BEGIN EC PRIVATE KEY")) {
			t.Fatal("snapshot file holds plaintext")
		}
		if fi, _ := os.Stat(saved.Path); fi.Mode().Perm() != 0o600 {
			t.Errorf("snapshot mode %v, want 0600", fi.Mode().Perm())
		}
		lsOut := mustKubox(t, env, append([]string{"snapshot", "ls", "-o", "json"}, snapArgs...)...)
		if !strings.Contains(lsOut, filepath.Base(saved.Path)) {
			t.Errorf("snapshot ls does not list %s:\n%s", saved.Path, lsOut)
		}
		if out := mustKubox(t, env, append([]string{"snapshot", "verify", saved.Path}, snapArgs...)...); !strings.Contains(out, "ok") {
			t.Errorf("snapshot verify: %q", out)
		}
	})

	harness.Phase(t, "restore-refused-while-running", func(t *testing.T) {
		// A running server's data dir is refused.
		if _, errOut, code := kubox(t, env, "restore", "-q", "--snapshot", saved.Path, "--key-file", keyFile, "--data-dir", n1.DataDir); code == 0 || !strings.Contains(errOut, "in use") {
			t.Errorf("restore onto a running server: exit %d, %q; want a refusal", code, errOut)
		}
	})

	harness.Phase(t, "changes-after-snapshot", func(t *testing.T) {
		// Changes after the snapshot, which the restore must not bring back.
		createConfigMaps(ctx, t, n1, "late", 0, 10)
		for i := range 5 {
			if _, err := n1.Kubectl(ctx, "delete", "configmap", fmt.Sprintf("cm-%03d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if got := configMapNames(ctx, t, n1); len(got) != snapConfigMaps+5 {
			t.Fatalf("after changes: %d ConfigMaps, want %d", len(got), snapConfigMaps+5)
		}
		if _, err := n1.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})

	harness.Phase(t, "bad-input-refused", func(t *testing.T) {
		// Bad input: one line, non-zero exit, the data dir untouched.
		truncated := filepath.Join(n1.Root, "truncated.kbsnap")
		if err := os.WriteFile(truncated, data[:len(data)*2/3], 0o600); err != nil {
			t.Fatal(err)
		}
		notSnap := filepath.Join(n1.Root, "not-a-snapshot.kbsnap")
		if err := os.WriteFile(notSnap, bytes.Repeat([]byte("not a snapshot\n"), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		flipped := filepath.Join(n1.Root, "flipped.kbsnap")
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 0x01
		if err := os.WriteFile(flipped, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		before, beforeSiblings := dirState(t, n1.DataDir), siblings(t, n1.DataDir)
		for _, c := range []struct{ name, file, key, want string }{
			{"wrong key", saved.Path, otherKey, "wrong backup key"},
			{"truncated", truncated, keyFile, "corrupted or truncated"},
			{"bit flip", flipped, keyFile, "corrupted or truncated"},
			{"not a snapshot", notSnap, keyFile, "not a kubox snapshot"},
			{"missing file", filepath.Join(n1.Root, "nope.kbsnap"), keyFile, "no such file"},
		} {
			stdout, errOut, code := kubox(t, env, "restore", "-q", "--snapshot", c.file, "--key-file", c.key, "--data-dir", n1.DataDir)
			lines := strings.Split(strings.TrimSpace(stdout+errOut), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("restore, %s: exit %d, output %q; want one line saying %q and a non-zero exit", c.name, code, stdout+errOut, c.want)
			} else {
				t.Logf("restore, %s: %s", c.name, lines[0])
			}
			if after := dirState(t, n1.DataDir); after != before {
				t.Fatalf("restore, %s: the data dir changed", c.name)
			}
			if s := siblings(t, n1.DataDir); !slices.Equal(s, beforeSiblings) {
				t.Fatalf("restore, %s: files beside the data dir changed: %v, was %v", c.name, s, beforeSiblings)
			}
		}
	})

	harness.Phase(t, "forged-snapshot-refused", func(t *testing.T) {
		// Someone who can write to the snapshot store makes a snapshot of
		// the real data plus a ClusterRoleBinding, encrypted to the public
		// recipient in the header, with a correct trailer: unsigned, or
		// signed with a key of their own. Both are refused, in one line,
		// by verify and restore, and the data dir stays as it was.
		forgeDir := filepath.Join(n1.Root, "forged")
		attacker, err := backup.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		unsigned := forgeSnapshot(ctx, t, saved.Path, keyFile, forgeDir, nil)
		foreign := forgeSnapshot(ctx, t, saved.Path, keyFile, forgeDir, attacker)
		before, beforeSiblings := dirState(t, n1.DataDir), siblings(t, n1.DataDir)
		for _, c := range []struct{ name, file, want string }{
			{"unsigned", unsigned, "not signed"},
			{"signed by another key", foreign, "not from the trusted signing key"},
		} {
			for _, verb := range [][]string{
				{"snapshot", "verify", "--key-file", keyFile, c.file},
				{"restore", "-q", "--snapshot", c.file, "--key-file", keyFile, "--data-dir", n1.DataDir},
			} {
				stdout, errOut, code := kubox(t, env, verb...)
				lines := strings.Split(strings.TrimSpace(stdout+errOut), "\n")
				if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
					t.Errorf("%s, %s: exit %d, output %q; want one line saying %q and a non-zero exit", verb[0], c.name, code, stdout+errOut, c.want)
				} else {
					t.Logf("%s, %s: %s", verb[0], c.name, lines[0])
				}
			}
			if after := dirState(t, n1.DataDir); after != before {
				t.Fatalf("restore, %s: the data dir changed", c.name)
			}
			if s := siblings(t, n1.DataDir); !slices.Equal(s, beforeSiblings) {
				t.Fatalf("restore, %s: files beside the data dir changed: %v, was %v", c.name, s, beforeSiblings)
			}
			// Only the signature gives it away: the operator's explicit
			// override reads it as a valid snapshot, with a warning.
			_, errOut, code := kubox(t, env, "snapshot", "verify", "--insecure-skip-signature", "--key-file", keyFile, c.file)
			if code != 0 || !strings.Contains(errOut, "WARNING") {
				t.Errorf("verify --insecure-skip-signature, %s: exit %d, %q; want success with a warning", c.name, code, errOut)
			}
		}
	})

	// The replacement box: a fresh data dir, another hostname and another
	// IP (a network namespace of its own), on a host with nothing left of
	// the old box (its pod bridge still holds the old box's pod CIDR, and
	// the new node gets another one).
	for _, e := range host.Restore(n1) {
		t.Errorf("clean the host of the old box: %v", e)
	}
	ns := harness.NewNetns(t, "kubox-e2e-restore", 1)
	n2 := harness.NewNode(t, env)
	n2.InNetns(ns, restoredNode)
	var restoreBegan time.Time
	harness.Phase(t, "restore-on-new-box", func(t *testing.T) {
		restoreBegan = time.Now()
		out, err := n2.Kubox(ctx, "restore", "--snapshot", saved.Path, "--key-file", keyFile, "--data-dir", n2.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("restore took %s:\n%s", time.Since(restoreBegan).Round(time.Millisecond), out)
		if !strings.Contains(out, "node "+restoredNode+" ("+ns.IP+")") {
			t.Errorf("restore does not name this box's hostname %s and IP %s: %q", restoredNode, ns.IP, out)
		}
		n2.Start()
		waitCtx2, waitCancel2 := context.WithTimeout(ctx, 3*time.Minute)
		defer waitCancel2()
		waitNamedNodeReady(waitCtx2, t, n2, restoredNode, saved.Node)
		if ip, err := n2.Kubectl(ctx, "get", "node", restoredNode, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`); err != nil || ip != ns.IP {
			t.Errorf("restored node's InternalIP %q (%v), want the new box's %s", ip, err, ns.IP)
		}
	})

	harness.Phase(t, "restored-objects", func(t *testing.T) {
		if got := configMapNames(ctx, t, n2); !slices.Equal(got, want) {
			t.Errorf("restored ConfigMaps differ from the snapshot's: got %d, want %d; first difference %s", len(got), len(want), firstDiff(got, want))
		}
		secret, err := n2.Kubectl(ctx, "get", "secret", snapSecretName, "-o", "jsonpath={.data.k}")
		if err != nil {
			t.Fatal(err)
		}
		if dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(secret)); err != nil || string(dec) != snapMarker {
			t.Errorf("restored Secret: %q (%v), want %q", dec, err, snapMarker)
		}
	})

	harness.Phase(t, "old-kubeconfig-on-new-ip", func(t *testing.T) {
		// The old box's admin kubeconfig (its CA and client cert), pointed at
		// the new box's IP, works on the restored cluster from another host:
		// the apiserver's serving cert was re-issued for the new IP by the old CA.
		oldKC, err := os.ReadFile(n1.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		movedKC := filepath.Join(n1.Root, "old-admin-new-ip.kubeconfig")
		if !bytes.Contains(oldKC, []byte("https://127.0.0.1:6443")) {
			t.Fatalf("old admin kubeconfig does not name https://127.0.0.1:6443:\n%s", oldKC)
		}
		if err := os.WriteFile(movedKC, bytes.ReplaceAll(oldKC, []byte("https://127.0.0.1:6443"), []byte("https://"+ns.IP+":6443")), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(ctx, env.Kubectl, "--kubeconfig", movedKC, "get", "configmap", "cm-010", "-o", "jsonpath={.data.v}").CombinedOutput(); err != nil || !strings.Contains(string(out), snapMarker) {
			t.Errorf("old admin kubeconfig against the new IP %s: %v: %s", ns.IP, err, out)
		}
	})

	harness.Phase(t, "leaf-certs-reissued", func(t *testing.T) {
		// Leaf certs were re-issued for the new node name.
		pemData, err := os.ReadFile(filepath.Join(n2.DataDir, "pki", "etcd", "peer.crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(pemData)
		if block == nil {
			t.Fatal("etcd peer cert: no PEM")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cert.DNSNames, restoredNode) {
			t.Errorf("etcd peer cert SANs %v lack %s", cert.DNSNames, restoredNode)
		}
		if _, err := os.Stat(filepath.Join(n2.DataDir, "restore.json.done")); err != nil {
			t.Errorf("restore marker not finished: %v", err)
		}
	})

	harness.Phase(t, "deployment-runs-again", func(t *testing.T) {
		// The old box's pods are garbage collected with its Node, and the
		// Deployment runs again here (images are not in a snapshot: import).
		if err := n2.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "route", "add", "10.42.0.0/16", "via", ns.IP, "dev", ns.HostLink).CombinedOutput(); err != nil {
			t.Fatalf("route pod network to the new box: %v: %s", err, out) // goes with the veth
		}
		for _, ip := range waitWebPods(ctx, t, n2, 2, restoreBegan.Truncate(time.Second)) {
			assertHTTP(t, ip)
		}
		if _, err := n2.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop restored node: %v", err)
		}
	})

	harness.Phase(t, "restore-moves-data-dir-aside", func(t *testing.T) {
		// Restoring over an existing data dir moves it aside, never deletes it.
		out, err := n2.Kubox(ctx, "restore", "-q", "--snapshot", saved.Path, "--key-file", keyFile, "--data-dir", n2.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		var moved string
		for _, s := range siblings(t, n2.DataDir) {
			if strings.HasPrefix(s, filepath.Base(n2.DataDir)+".old-") {
				moved = filepath.Join(filepath.Dir(n2.DataDir), s)
			}
		}
		if moved == "" || !strings.Contains(out, moved) {
			t.Errorf("restore over a data dir: no %s.old-* kept (output %q)", n2.DataDir, out)
		} else if _, err := os.Stat(filepath.Join(moved, "etcd")); err != nil {
			t.Errorf("moved-aside data dir lacks etcd: %v", err)
		}
	})
}

// TestSnapshotSchedule: scheduled snapshots fire on their cron schedule, and
// retention keeps the newest N scheduled ones and never a manual one. The
// box holds only the public keys and the signing key: the decrypting
// identity is kept elsewhere, and restores a scheduled snapshot.
func TestSnapshotSchedule(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root := t.TempDir()
	keyFile := filepath.Join(root, "backup.key")
	snapDir := filepath.Join(root, "snapshots")
	mustKubox(t, env, "snapshot", "key", "create", "--key-file", keyFile)
	offBox := filepath.Join(t.TempDir(), "backup.key")
	if err := os.Rename(keyFile, offBox); err != nil {
		t.Fatal(err)
	}
	// Control plane only, on ports of its own: nothing here needs a kubelet.
	ports := []string{"--https-port", "16443", "--etcd-client-port", "12379", "--etcd-peer-port", "12380", "--kubelet-port", "20250"}
	n := harness.NewNode(t, env, append([]string{"--disable-agent", "--snapshot-schedule", "@every 5s", "--snapshot-retention", "2",
		"--snapshot-dir", snapDir, "--snapshot-key-file", keyFile}, ports...)...)
	n.Start()
	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer readyCancel()
	if err := n.WaitReadyz(readyCtx); err != nil {
		t.Fatal(err)
	}
	// In every scheduled snapshot from now on.
	if _, err := n.Kubectl(ctx, "create", "configmap", "sched-marker", "--from-literal=v="+snapMarker); err != nil {
		t.Fatal(err)
	}
	markerAt := time.Now()
	mustKubox(t, env, "snapshot", "save", "-q", "--name", "keep-me", "--data-dir", n.DataDir, "--snapshot-dir", snapDir, "--key-file", keyFile, "--etcd-client-port", "12379")

	type entry struct {
		File      string
		Scheduled bool
	}
	list := func() []entry {
		var es []entry
		out := mustKubox(t, env, "snapshot", "ls", "-o", "json", "--snapshot-dir", snapDir)
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("snapshot ls -o json: %v\n%s", err, out)
		}
		return es
	}
	savedLines := func() int {
		log, _ := os.ReadFile(n.LogPath)
		return strings.Count(string(log), "scheduled snapshot saved")
	}
	deadline := time.Now().Add(40 * time.Second)
	for savedLines() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if got := savedLines(); got < 3 {
		t.Fatalf("%d scheduled snapshots in 40 s with @every 5s; want at least 3", got)
	}
	es := list()
	var scheduled, manual int
	for _, e := range es {
		if e.Scheduled {
			scheduled++
		} else {
			manual++
		}
	}
	t.Logf("after %d scheduled snapshots: %d scheduled and %d manual files", savedLines(), scheduled, manual)
	if scheduled != 2 || manual != 1 {
		t.Errorf("snapshot dir holds %d scheduled and %d manual snapshots; want 2 (retention) and 1: %+v", scheduled, manual, es)
	}
	if out, err := n.Kubectl(ctx, "get", "events", "-n", "default", "--field-selector", "reason=SnapshotSaved", "-o", "name"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("no SnapshotSaved events: %q %v", out, err)
	}
	if out, err := n.Kubectl(ctx, "get", "--raw", "/metrics"); err != nil || !strings.Contains(out, `kubox_snapshot_scheduled_total{result="success"}`) {
		t.Errorf("apiserver /metrics lacks kubox_snapshot_scheduled_total: %v", err)
	}
	assertMetricsEndpoint(t, n, "https://127.0.0.1:10259/metrics",
		`kubox_snapshot_scheduled_total{result="success"}`, `kubox_certificate_expiry_seconds{cert="apiserver"}`)
	// Every file left is a complete snapshot that the off-box identity
	// opens and whose signature it trusts; the box's own key files cannot
	// open one.
	for _, e := range es {
		mustKubox(t, env, "snapshot", "verify", "--key-file", offBox, filepath.Join(snapDir, e.File))
	}
	if _, errOut, code := kubox(t, env, "snapshot", "verify", "--key-file", keyFile, filepath.Join(snapDir, es[0].File)); code == 0 {
		t.Errorf("verify with the box's key files only succeeded: %q", errOut)
	}
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// The newest scheduled snapshot, restored with the off-box identity,
	// runs with the marker.
	var newest struct {
		Path      string
		Scheduled bool
		CreatedAt time.Time `json:"created_at"`
	}
	var all []struct {
		Path      string
		Scheduled bool
		CreatedAt time.Time `json:"created_at"`
	}
	if err := json.Unmarshal([]byte(mustKubox(t, env, "snapshot", "ls", "-o", "json", "--snapshot-dir", snapDir)), &all); err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if e.Scheduled && e.CreatedAt.After(newest.CreatedAt) {
			newest = e
		}
	}
	if !newest.CreatedAt.After(markerAt.Add(time.Second)) {
		t.Fatalf("no scheduled snapshot after the marker ConfigMap: %+v", all)
	}
	n2 := harness.NewNode(t, env, append([]string{"--disable-agent"}, ports...)...)
	out, errOut, code := kubox(t, env, "restore", "-q", "--snapshot", newest.Path, "--key-file", offBox, "--data-dir", n2.DataDir, "--etcd-peer-port", "12380")
	if code != 0 || strings.Contains(errOut, "WARNING") {
		t.Fatalf("restore with the off-box identity: exit %d\n%s%s", code, out, errOut)
	}
	n2.Start()
	readyCtx2, readyCancel2 := context.WithTimeout(ctx, 2*time.Minute)
	defer readyCancel2()
	if err := n2.WaitReadyz(readyCtx2); err != nil {
		t.Fatal(err)
	}
	if v, err := n2.Kubectl(ctx, "get", "configmap", "sched-marker", "-o", "jsonpath={.data.v}"); err != nil || v != snapMarker {
		t.Errorf("restored marker ConfigMap: %q %v", v, err)
	}
	if _, err := n2.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop restored node: %v", err)
	}
}
