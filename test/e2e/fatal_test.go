package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubox/kubox/test/harness"
)

// TestEtcdFatalStopsCleanly fills the filesystem under etcd's data dir (a
// small tmpfs mounted on <data-dir>/etcd, so the data dir's own disk stays
// roomy) until etcd fails a write and logs at Fatal level. etcd's Fatal
// would end the whole process on the spot; kubox must instead stop every
// component, exit non-zero with one line naming etcd and the cause, and
// start again once there is room, with every acknowledged write there.
func TestEtcdFatalStopsCleanly(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--disable-agent")
	etcdDir := filepath.Join(n.DataDir, "etcd")
	if err := os.MkdirAll(etcdDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// etcd preallocates 64 MiB WAL segments: 100 MiB holds the first one
	// and a small database, not a second segment.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=100m,mode=0700", "kubox-e2e-etcd", etcdDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v: %s", etcdDir, err, out)
	}
	t.Cleanup(func() {
		n.Kill() // before the unmount: etcd must not hold the dir
		if out, err := exec.Command("umount", etcdDir).CombinedOutput(); err != nil {
			t.Errorf("cleanup: umount %s: %v: %s", etcdDir, err, out)
		}
	})

	var acked []string
	harness.Phase(t, "fill-until-fatal", func(t *testing.T) {
		n.Start()
		if err := n.WaitAPIReady(ctx); err != nil {
			t.Fatal(err)
		}
		client, err := n.Client()
		if err != nil {
			t.Fatal(err)
		}
		value := strings.Repeat("x", 700<<10)
		for i := 0; i < 400; i++ {
			if done, _ := n.Exited(); done {
				break
			}
			name := fmt.Sprintf("fill-%03d", i)
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := client.CoreV1().ConfigMaps("default").Create(wctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Data:       map[string]string{"v": value},
			}, metav1.CreateOptions{})
			wcancel()
			if err == nil {
				acked = append(acked, name)
			}
		}
		t.Logf("%d ConfigMaps acknowledged before the disk filled", len(acked))
		exited, exitErr := n.WaitExit(90 * time.Second)
		if !exited {
			t.Fatal("kubox still runs after etcd's disk filled up")
		}
		if exitErr == nil {
			t.Fatal("kubox exited with status 0 after a fatal etcd error")
		}
		last := lastKuboxLine(t, n.LogPath)
		if !strings.Contains(last, "etcd: fatal error:") || !strings.Contains(last, "no space left on device") {
			t.Fatalf("last line %q does not name etcd and the full disk", last)
		}
		t.Logf("exit: %v; last line: %s", exitErr, last)
		if len(acked) == 0 {
			t.Fatal("no write acknowledged before the disk filled: the test proves nothing")
		}
	})
	harness.Phase(t, "room-again", func(t *testing.T) {
		if out, err := exec.Command("mount", "-o", "remount,size=400m", etcdDir).CombinedOutput(); err != nil {
			t.Fatalf("grow tmpfs: %v: %s", err, out)
		}
		n.Start()
		if err := n.WaitAPIReady(ctx); err != nil {
			t.Fatal(err)
		}
		client, err := n.Client()
		if err != nil {
			t.Fatal(err)
		}
		list, err := client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, cm := range list.Items {
			have[cm.Name] = true
		}
		var lost []string
		for _, name := range acked {
			if !have[name] {
				lost = append(lost, name)
			}
		}
		if len(lost) > 0 {
			t.Fatalf("%d of %d acknowledged ConfigMaps lost: %v", len(lost), len(acked), lost)
		}
		if d, err := n.Stop(30 * time.Second); err != nil {
			t.Fatalf("stop after %s: %v", d, err)
		}
	})
}

// lastKuboxLine is the last line kubox's main printed ("kubox: ...") in
// the node's log. Not lastLineOf: after a fatal error the stop's own errors
// (a component that waited on the wedged etcd) follow kubox's line.
func lastKuboxLine(t *testing.T, logPath string) string {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "kubox: ") {
			return lines[i]
		}
	}
	t.Fatalf("no line starting with \"kubox: \" in %s", logPath)
	return ""
}
