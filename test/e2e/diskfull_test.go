package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/internal/mounts"
	"github.com/kubox/kubox/test/harness"
)

// diskFS is the size of the data dir's filesystem: room for the runtime
// binaries, containerd's root, etcd (two preallocated 64 MiB WAL
// segments) and the kubelet, with space to spare. Its floor is 64 MiB (2%
// would be less than etcd's WAL segment).
const (
	diskFS    = 1 << 30
	diskFloor = "64.0 MiB"
)

// TestDiskFull is a data dir on a small disk that fills up while kubox runs:
//
//   - `kubox snapshot save` that would leave the disk below the floor is
//     refused with one line and writes nothing; with room it works;
//   - a file fills the disk while a client writes ConfigMaps: kubox stops
//     cleanly (etcd stopped by the supervisor) and exits non-zero with one
//     line naming the data dir, the free space and the floor;
//   - a start while the disk is full is refused with the same kind of line
//     (a start needs the floor and the WAL segment etcd gave back);
//   - once the file is removed kubox starts, the node is Ready and every
//     acknowledged ConfigMap is there.
func TestDiskFull(t *testing.T) {
	env := harness.Require(t)
	harness.LockHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	// Made before the node, so it is unmounted after the node's cleanup
	// has killed everything using it.
	mnt := smallFilesystem(t, diskFS)
	dataDir := filepath.Join(mnt, "data")
	n := harness.NewNode(t, env, "--data-dir", dataDir)
	n.DataDir = dataDir // the later --data-dir wins; the harness finds kubox's processes by it
	fill := filepath.Join(mnt, "fill")
	snapDir := filepath.Join(dataDir, "snapshots")

	harness.Phase(t, "start", func(t *testing.T) {
		n.Start()
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := n.WaitNodeReady(wctx); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("du", "-sh", "--", dataDir+"/bin", dataDir+"/containerd", dataDir+"/etcd", dataDir+"/kubelet", dataDir).CombinedOutput()
		t.Logf("data dir use once Ready:\n%s", out)
	})

	harness.Phase(t, "snapshot-refused-without-room", func(t *testing.T) {
		// 80 MiB free: above the floor, so kubox runs on, but a snapshot
		// (its 32 MiB margin plus the 64 MiB floor it must leave) does not fit.
		fillTo(t, mnt, fill, 80<<20)
		begin := time.Now()
		out, errOut, code := kubox(t, env, "snapshot", "save", "-q", "--insecure-plaintext", "--data-dir", dataDir)
		if code == 0 {
			t.Fatalf("snapshot save with 80 MiB free succeeded: %s", out)
		}
		line := strings.TrimSpace(errOut)
		if strings.Contains(line, "\n") || !strings.HasPrefix(line, "kubox: save snapshot: not enough free space for a snapshot: "+snapDir+" has ") ||
			!strings.Contains(line, "must keep "+diskFloor+" free") {
			t.Fatalf("want one line naming the dir, the free space and the estimate; got:\n%s", errOut)
		}
		t.Logf("refused in %s: %s", time.Since(begin).Round(time.Millisecond), line)
		if des, err := os.ReadDir(snapDir); err == nil && len(des) > 0 {
			t.Fatalf("the refused save left %s behind", des[0].Name())
		}
		if done, err := n.Exited(); done {
			t.Fatalf("kubox exited above the floor: %v", err)
		}
		removeFill(t, fill)
		// With room the same save works.
		mustKubox(t, env, "snapshot", "save", "-q", "--insecure-plaintext", "--data-dir", dataDir)
	})

	acked := newAckedWrites()
	harness.Phase(t, "fill-stops-kubox", func(t *testing.T) {
		wctx, stopWriter := context.WithCancel(ctx)
		writerDone := make(chan struct{})
		go func() { defer close(writerDone); acked.write(wctx, t, n.Kubeconfig) }()
		defer func() { stopWriter(); <-writerDone }()
		if err := acked.wait(ctx, 50); err != nil {
			t.Fatal(err)
		}
		fillTo(t, mnt, fill, 30<<20) // below the 64 MiB floor
		filled := time.Now()
		exited, err := n.WaitExit(time.Minute)
		if !exited {
			t.Fatal("kubox still runs a minute after its disk filled")
		}
		took := time.Since(filled).Round(100 * time.Millisecond)
		if exitCode(err) <= 0 {
			t.Fatalf("kubox exited with %v, want a non-zero status", err)
		}
		line := lastLineOf(t, n)
		want := "kubox: disk: data dir " + dataDir + ": only "
		if !strings.HasPrefix(line, want) || !strings.Contains(line, "below the "+diskFloor+" floor: stopped; free space and kubox starts again") {
			t.Fatalf("last line %q, want %q... below the %s floor: stopped; ...", line, want, diskFloor)
		}
		log := readLog(t, n)
		if !strings.Contains(log, `msg="component stopped" component=etcd`) {
			t.Error("etcd was not stopped cleanly by the supervisor")
		}
		for _, bad := range []string{"panic:", `"level":"fatal"`, `"level":"panic"`, "no space left on device"} {
			if strings.Contains(log, bad) {
				t.Errorf("the log has %q: the guard did not act first", bad)
			}
		}
		t.Logf("kubox exited %s after the fill (%d ConfigMaps acknowledged): %s", took, acked.count(), line)
		if i := strings.Index(log, "stopping kubox: "); i >= 0 {
			for _, l := range strings.Split(log[i:], "\n") {
				if strings.Contains(l, `msg="component stopped"`) || strings.Contains(l, "did not stop") {
					t.Logf("  %s", l)
				}
			}
		}
		stopWriter()
		<-writerDone
		for _, p := range []string{"member/snap/db", "member/wal"} {
			if _, err := os.Stat(filepath.Join(dataDir, "etcd", p)); err != nil {
				t.Errorf("etcd's data dir: %v", err)
			}
		}
	})

	harness.Phase(t, "start-refused-while-full", func(t *testing.T) {
		before := len(readLog(t, n))
		n.Start()
		exited, err := n.WaitExit(time.Minute)
		if !exited {
			t.Fatal("kubox started on a full disk")
		}
		if exitCode(err) <= 0 {
			t.Fatalf("kubox exited with %v, want a non-zero status", err)
		}
		since := readLog(t, n)[before:]
		line := lastLine(since)
		// etcd gave back its preallocated WAL segment as it stopped: a start
		// needs it again on top of the floor.
		if !strings.HasPrefix(line, "kubox: data dir "+dataDir+": only ") || !strings.Contains(line, "a start needs (the "+diskFloor+" floor and etcd's 64.0 MiB WAL segment): not starting; free space and kubox starts again") {
			t.Fatalf("last line %q", line)
		}
		if strings.Contains(since, "component ready") {
			t.Error("a component started on the full disk")
		}
		t.Logf("refused: %s", line)
	})

	harness.Phase(t, "free-and-restart", func(t *testing.T) {
		removeFill(t, fill)
		n.Start()
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer wcancel()
		if err := n.WaitNodeReady(wctx); err != nil {
			t.Fatal(err)
		}
		out, err := n.Kubectl(ctx, "get", "configmaps", "-n", "default", "-l", "kubox-e2e=disk", "-o", `jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, name := range strings.Fields(out) {
			have[name] = true
		}
		lost := 0
		for _, name := range acked.names() {
			if !have[name] {
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged ConfigMap %s is gone", name)
				}
			}
		}
		t.Logf("acknowledged %d, present %d, lost %d", acked.count(), len(have), lost)
	})
}

// smallFilesystem mounts a fresh ext4 of size bytes (a sparse file on a
// loop device, no blocks reserved for root) and returns its mount point.
// The mount and the loop device are removed when the test ends.
func smallFilesystem(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("mkfs.ext4", "-q", "-F", "-m", "0", img)
	dev := run("losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup -d %s: %v: %s", dev, err, out)
		}
	})
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run("mount", "-t", "ext4", dev, mnt)
	t.Cleanup(func() {
		// Deepest first: what the kubelet and containerd mounted below it too.
		if _, err := mounts.UnmountUnder(mnt); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return mnt
}

// fillTo makes the file fill so big that leave bytes stay free on the
// filesystem at mnt (fallocate: the blocks are taken at once).
func fillTo(t *testing.T, mnt, fill string, leave int64) {
	t.Helper()
	removeFill(t, fill)
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free <= leave {
		t.Fatalf("only %d MiB free before the fill, want more than %d", free>>20, leave>>20)
	}
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, free-leave); err != nil {
		t.Fatalf("fallocate %d MiB: %v", (free-leave)>>20, err)
	}
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("filled %s: %d MiB free", mnt, int64(st.Bavail)*int64(st.Bsize)>>20)
}

func removeFill(t *testing.T, fill string) {
	t.Helper()
	if err := os.Remove(fill); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

func readLog(t *testing.T, n *harness.Node) string {
	t.Helper()
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// ackedWrites creates ConfigMaps one after the other and records those the
// apiserver acknowledged.
type ackedWrites struct {
	mu  sync.Mutex
	ok  []string
	got chan struct{} // signalled on each acknowledged write
}

func newAckedWrites() *ackedWrites { return &ackedWrites{got: make(chan struct{}, 1)} }

func (a *ackedWrites) write(ctx context.Context, t *testing.T, kubeconfig string) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Error(err)
		return
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Error(err)
		return
	}
	payload := strings.Repeat("x", 1024)
	for i := 0; ctx.Err() == nil; i++ {
		name := fmt.Sprintf("disk-%05d", i)
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubox-e2e": "disk"}},
			Data:       map[string]string{"v": payload},
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			// kubox stopped: keep trying (not acknowledged) until told to end.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		a.mu.Lock()
		a.ok = append(a.ok, name)
		a.mu.Unlock()
		select {
		case a.got <- struct{}{}:
		default:
		}
	}
}

// wait blocks until n writes were acknowledged.
func (a *ackedWrites) wait(ctx context.Context, n int) error {
	for a.count() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d ConfigMaps acknowledged: %w", a.count(), ctx.Err())
		case <-a.got:
		}
	}
	return nil
}

func (a *ackedWrites) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ok)
}

func (a *ackedWrites) names() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ok...)
}
