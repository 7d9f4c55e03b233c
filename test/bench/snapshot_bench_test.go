package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/test/harness"
)

const (
	benchConfigMaps   = 1000
	benchConfigMapLen = 100 << 10 // about 100 MiB of ConfigMaps in all
	benchRounds       = 3
)

// configMapData is half random (base64) and half repetitive text, so the
// db compresses somewhat like real objects do, not perfectly.
func configMapData(i int) string {
	raw := make([]byte, benchConfigMapLen/2*3/4)
	_, _ = rand.Read(raw)
	var sb strings.Builder
	sb.WriteString(base64.StdEncoding.EncodeToString(raw))
	for sb.Len() < benchConfigMapLen {
		fmt.Fprintf(&sb, "key-%d: value of an ordinary config entry number %d\n", i, sb.Len())
	}
	return sb.String()
}

// BenchmarkSnapshot fills etcd with about 100 MiB of ConfigMaps and compares
// `kubox snapshot save` (etcd stream -> zstd -> age -> file) with etcd's own
// plain snapshot of the same db (clientv3 Maintenance.Snapshot to a file),
// then times `kubox restore`.
func BenchmarkSnapshot(b *testing.B) {
	env := harness.Require(b)
	// Control plane only, on ports of its own: a snapshot needs no kubelet.
	n := harness.NewNode(b, env, "--disable-agent",
		"--https-port", "16443", "--etcd-client-port", "12379", "--etcd-peer-port", "12380", "--kubelet-port", "20250")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n.Start()
	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer readyCancel()
	if err := n.WaitReadyz(readyCtx); err != nil {
		n.DumpLog(20)
		b.Fatal(err)
	}
	// Not n.Client(): its default client-side rate limit (5 QPS) would make
	// the fill take minutes.
	rc, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	rc.QPS, rc.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, benchConfigMaps)
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i)}, Data: map[string]string{"v": configMapData(i)}}
				var err error
				for try := 0; try < 5; try++ {
					cctx, c := context.WithTimeout(ctx, 30*time.Second)
					_, err = cs.CoreV1().ConfigMaps("default").Create(cctx, cm, metav1.CreateOptions{})
					c()
					if err == nil {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < benchConfigMaps; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("create ConfigMaps: %v", err)
	}
	report(b, "fill etcd with ConfigMaps", time.Since(begin).Seconds(), "s")

	keyFile := filepath.Join(n.Root, "backup.key")
	if _, err := n.Kubox(ctx, "snapshot", "key", "create", "--key-file", keyFile); err != nil {
		b.Fatal(err)
	}
	snapDir := filepath.Join(n.Root, "snapshots")
	plainDir := filepath.Join(n.Root, "plain")
	if err := os.MkdirAll(plainDir, 0o700); err != nil {
		b.Fatal(err)
	}
	pki := filepath.Join(n.DataDir, "pki", "etcd")
	ep := backup.EtcdEndpoint{URL: "https://127.0.0.1:12379", CACert: filepath.Join(pki, "server-ca.crt"),
		Cert: filepath.Join(pki, "client.crt"), Key: filepath.Join(pki, "client.key")}

	var plainRates, kuboxRates, inProcRates []float64
	var dbSize, snapSize, localRSS int64
	var lastSnap string
	for r := 0; r < benchRounds; r++ {
		// etcd's own plain snapshot, to a file, fsynced.
		size, took, err := plainSnapshot(ctx, ep, filepath.Join(plainDir, fmt.Sprintf("plain-%d.db", r)))
		if err != nil {
			b.Fatal(err)
		}
		dbSize = size
		plainRates = append(plainRates, float64(size)/took.Seconds())

		// kubox snapshot save, as a user runs it (process start included).
		begin := time.Now()
		cmd := exec.CommandContext(ctx, env.Bin, "snapshot", "save", "-q", "-o", "json", "--data-dir", n.DataDir,
			"--snapshot-dir", snapDir, "--key-file", keyFile, "--etcd-client-port", "12379")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("kubox snapshot save: %v", err)
		}
		took = time.Since(begin)
		localRSS = max(localRSS, maxRSS(cmd))
		var res struct {
			Path       string
			Size       int64
			EtcdDBSize int64   `json:"etcd_db_size"`
			Duration   float64 `json:"duration_seconds"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("snapshot save -o json: %v: %s", err, out)
		}
		kuboxRates = append(kuboxRates, float64(res.EtcdDBSize)/took.Seconds())
		inProcRates = append(inProcRates, float64(res.EtcdDBSize)/res.Duration)
		snapSize, lastSnap = res.Size, res.Path
		fmt.Printf("    round %d: plain %.1f MiB/s, kubox save %.1f MiB/s (%.1f MiB/s without process start)\n",
			r+1, mib(int64(plainRates[r])), mib(int64(kuboxRates[r])), mib(int64(inProcRates[r])))
	}
	plain, kubox := median(plainRates), median(kuboxRates)
	report(b, "etcd db size", mib(dbSize), "MiB")
	report(b, "snapshot file size", mib(snapSize), "MiB")
	report(b, "snapshot size / db size", float64(snapSize)/float64(dbSize), "ratio")
	report(b, "plain etcd snapshot to file (median)", mib(int64(plain)), "MiB/s")
	report(b, "kubox snapshot save (median)", mib(int64(kubox)), "MiB/s")
	report(b, "kubox save / plain snapshot throughput", kubox/plain, "ratio")
	report(b, "same, without kubox's process start", median(inProcRates)/plain, "ratio")

	begin = time.Now()
	if out, err := exec.CommandContext(ctx, env.Bin, "restore", "-q", "--snapshot", lastSnap, "--key-file", keyFile,
		"--data-dir", filepath.Join(n.Root, "restored"), "--node-name", "bench-restored", "--etcd-peer-port", "12380").CombinedOutput(); err != nil {
		b.Fatalf("kubox restore: %v: %s", err, out)
	}
	report(b, "kubox restore (verify, extract, etcd restore)", time.Since(begin).Seconds(), "s")
	benchSnapshotS3(ctx, b, env, n, keyFile, kubox, localRSS)
	if _, err := n.Stop(30 * time.Second); err != nil {
		b.Fatal(err)
	}
}

// plainSnapshot is etcd's own snapshot: the stream written to a file and
// fsynced, as `etcdctl snapshot save` does.
func plainSnapshot(ctx context.Context, ep backup.EtcdEndpoint, path string) (int64, time.Duration, error) {
	begin := time.Now()
	cli, err := backup.ConnectEtcd(ep)
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	n, err := io.Copy(f, rc)
	if err != nil {
		return 0, 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	return n, time.Since(begin), f.Close()
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
