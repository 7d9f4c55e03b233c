package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kubox/kubox/internal/s3test"
	"github.com/kubox/kubox/test/harness"
)

// benchSnapshotS3 streams the same db into a real S3 server (MinIO on
// loopback) and compares with the local save (localRate, db bytes per
// second with process start; localRSS, its peak RSS in bytes), then times a
// restore straight from S3.
func benchSnapshotS3(ctx context.Context, b *testing.B, env harness.Env, n *harness.Node, keyFile string, localRate float64, localRSS int64) {
	srv := s3test.Start(b, "127.0.0.1")
	s3Args := []string{"--snapshot-s3-endpoint", srv.Endpoint, "--snapshot-s3-bucket", srv.Bucket, "--snapshot-s3-prefix", "bench",
		"--snapshot-s3-credentials-file", srv.CredentialsFile(n.Root), "--snapshot-s3-insecure", "--snapshot-s3-path-style"}
	var rates []float64
	var rss int64
	var last string
	for r := 0; r < benchRounds; r++ {
		begin := time.Now()
		cmd := exec.CommandContext(ctx, env.Bin, append([]string{"snapshot", "save", "-q", "-o", "json", "--data-dir", n.DataDir,
			"--key-file", keyFile, "--etcd-client-port", "12379"}, s3Args...)...)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("kubox snapshot save to S3: %v", err)
		}
		took := time.Since(begin)
		var res struct {
			Path       string
			EtcdDBSize int64 `json:"etcd_db_size"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("snapshot save -o json: %v: %s", err, out)
		}
		rates = append(rates, float64(res.EtcdDBSize)/took.Seconds())
		rss = max(rss, maxRSS(cmd))
		last = res.Path
		fmt.Printf("    round %d: kubox save to S3 %.1f MiB/s, peak RSS %.0f MiB\n", r+1, mib(int64(rates[r])), mib(maxRSS(cmd)))
	}
	s3 := median(rates)
	report(b, "kubox snapshot save to S3 (median)", mib(int64(s3)), "MiB/s")
	report(b, "save to S3 / save to local file throughput", s3/localRate, "ratio")
	report(b, "peak RSS of a save to S3", mib(rss), "MiB")
	report(b, "peak RSS of a save to a local file", mib(localRSS), "MiB")

	begin := time.Now()
	if out, err := exec.CommandContext(ctx, env.Bin, append([]string{"restore", "-q", "--snapshot", last, "--key-file", keyFile,
		"--data-dir", filepath.Join(n.Root, "restored-s3"), "--node-name", "bench-restored", "--etcd-peer-port", "12380"}, s3Args...)...).CombinedOutput(); err != nil {
		b.Fatalf("kubox restore from S3: %v: %s", err, out)
	}
	report(b, "kubox restore from S3 (stream-verify, stream-extract, etcd restore)", time.Since(begin).Seconds(), "s")
}

// maxRSS is the peak resident set of a finished command, in bytes.
func maxRSS(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10
	}
	return 0
}
