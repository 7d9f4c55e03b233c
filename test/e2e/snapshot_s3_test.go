package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubox/kubox/internal/s3test"
	"github.com/kubox/kubox/test/harness"
)

// s3BigConfigMaps of about 950 KiB of random data each make an etcd db of
// some 60 MiB, so an upload has several parts and takes long enough to be
// cut in the middle.
const s3BigConfigMaps = 64

// TestSnapshotS3 is the off-box story: a box streams scheduled snapshots
// into a real S3 server (MinIO, started here), retention prunes the remote
// copies, an upload cut by the server's death leaves nothing that looks
// complete and the next one works, and a replacement box (another network
// namespace, a fresh data dir, nothing but the binary, the key and the S3
// credentials) restores the newest snapshot with one command, every object
// back.
func TestSnapshotS3(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	// The replacement box's namespace; the S3 server listens on the host
	// end of its link, which both boxes reach.
	ns := harness.NewNetns(t, "kubox-e2e-s3", 7)
	srv := s3test.Start(t, ns.HostIP)
	root := t.TempDir()
	keyFile := filepath.Join(root, "backup.key")
	mustKubox(t, env, "snapshot", "key", "create", "--key-file", keyFile)
	offBox := filepath.Join(t.TempDir(), "backup.key") // the identity never was on the box
	if err := os.Rename(keyFile, offBox); err != nil {
		t.Fatal(err)
	}
	creds := srv.CredentialsFile(root)
	s3Args := []string{"--snapshot-s3-endpoint", srv.Endpoint, "--snapshot-s3-bucket", srv.Bucket, "--snapshot-s3-prefix", "e2e",
		"--snapshot-s3-credentials-file", creds, "--snapshot-s3-insecure", "--snapshot-s3-path-style"}
	snapDir := filepath.Join(root, "snapshots")
	verbArgs := append([]string{"--snapshot-dir", snapDir}, s3Args...)

	harness.Phase(t, "bad-credentials", func(t *testing.T) {
		wrong := filepath.Join(root, "wrong.credentials")
		if err := os.WriteFile(wrong, []byte("aws_access_key_id = nobody\naws_secret_access_key = not-the-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		bad := slices.Clone(verbArgs)
		bad[slices.Index(bad, creds)] = wrong
		for _, c := range []struct {
			name, want string
			mode       os.FileMode
		}{{"wrong key", "refused the credentials", 0o600}, {"file readable by others", "chmod 600", 0o644}} {
			if err := os.Chmod(wrong, c.mode); err != nil {
				t.Fatal(err)
			}
			stdout, errOut, code := kubox(t, env, append([]string{"snapshot", "ls"}, bad...)...)
			lines := strings.Split(strings.TrimSpace(stdout+errOut), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("snapshot ls, %s: exit %d, output %q; want one line saying %q", c.name, code, stdout+errOut, c.want)
			} else {
				t.Logf("%s: %s", c.name, lines[0])
			}
		}
	})

	ports := []string{"--https-port", "16443", "--etcd-client-port", "12379", "--etcd-peer-port", "12380", "--kubelet-port", "20250"}
	n1 := harness.NewNode(t, env, slices.Concat([]string{"--disable-agent", "--snapshot-schedule", "@every 10s", "--snapshot-retention", "2",
		"--snapshot-dir", snapDir, "--snapshot-key-file", keyFile}, s3Args, ports)...)
	var nodeName string
	harness.Phase(t, "start-and-data", func(t *testing.T) {
		n1.Start()
		readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
		defer readyCancel()
		if err := n1.WaitReadyz(readyCtx); err != nil {
			t.Fatal(err)
		}
		createConfigMaps(ctx, t, n1, "cm", 0, 100)
		cs, err := n1.Client()
		if err != nil {
			t.Fatal(err)
		}
		for i := range s3BigConfigMaps {
			b := make([]byte, 700<<10)
			rand.Read(b)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%02d", i), Labels: map[string]string{"kubox-e2e": "snapshot"}},
				Data: map[string]string{"v": base64.StdEncoding.EncodeToString(b)}}
			if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})

	type lsEntry struct {
		Path      string
		Node      string
		Scheduled bool
		Location  string
		CreatedAt time.Time `json:"created_at"`
	}
	ls := func(t *testing.T) []lsEntry {
		var es []lsEntry
		out := mustKubox(t, env, append([]string{"snapshot", "ls", "-o", "json"}, verbArgs...)...)
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("snapshot ls -o json: %v\n%s", err, out)
		}
		return es
	}
	savedLines := func() int {
		log, _ := os.ReadFile(n1.LogPath)
		return strings.Count(string(log), "scheduled snapshot saved")
	}

	harness.Phase(t, "scheduled-in-bucket-with-retention", func(t *testing.T) {
		if err := harness.WaitFor(ctx, time.Second, func() bool { return savedLines() >= 4 }); err != nil {
			t.Fatalf("%d scheduled snapshots saved; want 4", savedLines())
		}
		var es []lsEntry
		// Retention runs right after each upload: look until it has.
		_ = harness.WaitFor(ctx, 500*time.Millisecond, func() bool {
			es = ls(t)
			n := 0
			for _, e := range es {
				if e.Scheduled && e.Location == "s3" {
					n++
				}
			}
			return n == 2
		})
		var remote, local int
		for _, e := range es {
			if e.Location == "s3" {
				remote++
				nodeName = e.Node
				if !strings.HasPrefix(e.Path, "s3://kubox/e2e/"+e.Node+"/scheduled-") {
					t.Errorf("remote snapshot %s is not under s3://kubox/e2e/<node>/", e.Path)
				}
			} else {
				local++
			}
		}
		if remote != 2 || local != 0 {
			t.Errorf("after %d scheduled snapshots: %d in S3 and %d local; want 2 (retention) and none (no local copy): %+v", savedLines(), remote, local, es)
		}
		if out, err := n1.Kubectl(ctx, "get", "--raw", "/metrics"); err != nil || !strings.Contains(out, `kubox_snapshot_upload_total{result="success"}`) {
			t.Errorf("/metrics lacks kubox_snapshot_upload_total success: %v", err)
		}
	})

	var keepMe string
	harness.Phase(t, "manual-save-streams-and-verifies", func(t *testing.T) {
		out, errOut, code := kubox(t, env, append([]string{"snapshot", "save", "--name", "keep-me", "--key-file", keyFile, "--etcd-client-port", "12379", "--data-dir", n1.DataDir}, verbArgs...)...)
		if code != 0 {
			t.Fatalf("snapshot save: exit %d\n%s%s", code, out, errOut)
		}
		keepMe = strings.Fields(out)[0]
		if !strings.HasPrefix(keepMe, "s3://kubox/e2e/") || !strings.Contains(errOut, "uploaded ") || !strings.Contains(errOut, "/s)") {
			t.Errorf("save to S3: %q, progress %q; want an s3:// URL and upload progress with sizes and rates", out, errOut)
		}
		if out := mustKubox(t, env, append([]string{"snapshot", "verify", "--key-file", offBox, keepMe}, verbArgs...)...); !strings.Contains(out, "ok") {
			t.Errorf("verify %s: %q", keepMe, out)
		}
	})

	harness.Phase(t, "server-killed-mid-upload", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, env.Bin, append([]string{"snapshot", "save", "--name", "cut", "--key-file", keyFile, "--etcd-client-port", "12379", "--data-dir", n1.DataDir}, verbArgs...)...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lines []string
		killed := false
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if !killed && strings.Contains(sc.Text(), "uploaded ") {
				srv.Kill() // a part is stored, the upload is not complete
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed || err == nil {
			t.Fatalf("save with the S3 server killed after the first part: killed %v, err %v\n%s", killed, err, strings.Join(lines, "\n"))
		}
		last := lines[len(lines)-1]
		if !strings.Contains(last, "cannot reach") {
			t.Errorf("save with the server gone ends with %q; want one line saying it cannot reach the store", last)
		}
		t.Logf("cut upload: %s", last)
		// A scheduled upload fails meanwhile: logged, as an Event and a metric.
		failedAt := func() bool {
			log, _ := os.ReadFile(n1.LogPath)
			return strings.Contains(string(log), "SCHEDULED SNAPSHOT FAILED")
		}
		if err := harness.WaitFor(ctx, time.Second, failedAt); err != nil {
			t.Errorf("no scheduled snapshot failure logged while the store was down")
		}
		srv.Restart()
		for o := range srv.Client().ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
			if strings.Contains(o.Key, "/cut-") {
				t.Errorf("the cut upload left an object: %s", o.Key)
			}
		}
		if out, err := n1.Kubectl(ctx, "get", "events", "-n", "default", "--field-selector", "reason=SnapshotFailed", "-o", "name"); err != nil || strings.TrimSpace(out) == "" {
			t.Errorf("no SnapshotFailed event: %q %v", out, err)
		}
		if out, err := n1.Kubectl(ctx, "get", "--raw", "/metrics"); err != nil || !strings.Contains(out, `kubox_snapshot_upload_total{result="failure"}`) {
			t.Errorf("/metrics lacks kubox_snapshot_upload_total failure: %v", err)
		}
		// Back: the next snapshots, manual and scheduled, work.
		before := savedLines()
		out := mustKubox(t, env, append([]string{"snapshot", "save", "-q", "--name", "after", "--key-file", keyFile, "--etcd-client-port", "12379", "--data-dir", n1.DataDir}, verbArgs...)...)
		mustKubox(t, env, append([]string{"snapshot", "verify", "--key-file", offBox, strings.Fields(out)[0]}, verbArgs...)...)
		if err := harness.WaitFor(ctx, time.Second, func() bool { return savedLines() > before }); err != nil {
			t.Errorf("no scheduled snapshot saved after the store came back")
		}
	})

	var want string
	harness.Phase(t, "stop-old-box", func(t *testing.T) {
		want = configMapDigest(ctx, t, n1)
		if _, err := n1.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if es := ls(t); !slices.ContainsFunc(es, func(e lsEntry) bool { return e.Path == keepMe }) {
			t.Errorf("retention removed the manual snapshot %s: %+v", keepMe, es)
		}
	})

	harness.Phase(t, "restore-latest-on-new-box", func(t *testing.T) {
		// Nothing but the binary, the key and the store's credentials.
		n2 := harness.NewNode(t, env, "--disable-agent")
		n2.InNetns(ns, "s3-restored")
		begin := time.Now()
		out, err := n2.Kubox(ctx, append([]string{"restore", "--latest", "--key-file", offBox, "--data-dir", n2.DataDir}, s3Args...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("restore --latest from S3 took %s:\n%s", time.Since(begin).Round(time.Millisecond), out)
		if !strings.Contains(out, "s3://kubox/e2e/"+nodeName+"/") || !strings.Contains(out, "read ") {
			t.Errorf("restore does not say which s3:// snapshot it read, with progress: %q", out)
		}
		n2.Start()
		readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
		defer readyCancel()
		if err := n2.WaitAPIReady(readyCtx); err != nil { // kubectl, in the box's namespace
			t.Fatal(err)
		}
		if got := configMapDigest(ctx, t, n2); got != want {
			t.Errorf("restored ConfigMaps differ from the old box's last state: digest %s, want %s", got, want)
		}
		if _, err := n2.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop restored box: %v", err)
		}
	})
}

// configMapDigest digests the names and data of the test's ConfigMaps
// (through kubectl, which runs in the node's network namespace).
func configMapDigest(ctx context.Context, t *testing.T, n *harness.Node) string {
	t.Helper()
	out, err := n.Kubectl(ctx, "get", "configmaps", "-n", "default", "-l", snapLabel, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list corev1.ConfigMapList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	h := sha256.New()
	for _, cm := range list.Items {
		fmt.Fprintf(h, "%s=%s\n", cm.Name, cm.Data["v"])
	}
	return fmt.Sprintf("%d:%s", len(list.Items), hex.EncodeToString(h.Sum(nil))[:16])
}
