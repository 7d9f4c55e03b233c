package bench

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kubox/kubox/airgap"
	"github.com/kubox/kubox/test/harness"
)

// Bundle shape: 3 images of 4 random (incompressible) layers of 25 MiB.
const (
	airgapImages     = 3
	airgapLayers     = 4
	airgapLayerBytes = 25 << 20
)

// BenchmarkAirgapImport compares `kubox airgap import` of a ~300 MB bundle
// with containerd's own `ctr images import` (through the transfer service,
// its default, and with --local) of OCI archives of images of the same shape
// (other random content, so none finds another's blobs), all unpacking, on
// the same running node; then restarts the node with the
// imported bundle in its images dir and reports the start-time check.
func BenchmarkAirgapImport(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		n := harness.NewNode(b, env)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		work := filepath.Join(n.Root, "bench")
		if err := os.MkdirAll(work, 0o700); err != nil {
			b.Fatal(err)
		}
		begin := time.Now()
		kuboxSet := benchImages(b, "kubox")
		ctrSet := benchImages(b, "ctr")
		localSet := benchImages(b, "ctr-local")
		bundle := filepath.Join(work, "bench.kbundle")
		m, err := airgap.CreateFile(ctx, bundle, kuboxSet, airgap.WriteOptions{})
		if err != nil {
			b.Fatal(err)
		}
		archive := filepath.Join(work, "bench-oci.tar")
		ctrBytes := writeOCIArchive(b, filepath.Join(work, "layout"), archive, ctrSet)
		localArchive := filepath.Join(work, "bench-oci-local.tar")
		localBytes := writeOCIArchive(b, filepath.Join(work, "layout-local"), localArchive, localSet)
		fi, _ := os.Stat(bundle)
		fmt.Printf("generated two image sets and wrote bundle + OCI archive in %s\n", time.Since(begin).Round(time.Millisecond))
		report(b, "airgap bundle content", float64(m.Size())/1e6, "MB")
		report(b, "airgap bundle file", float64(fi.Size())/1e6, "MB")

		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(n.RunDir, "containerd", "containerd.sock")

		t0 := time.Now()
		if out, err := n.Kubox(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", archive); err != nil {
			b.Fatalf("ctr import: %v\n%s", err, out)
		}
		ctrTook := time.Since(t0)
		// --local: the client imports through the content store itself, as
		// kubox does, instead of handing the stream to the transfer service.
		t0 = time.Now()
		if out, err := n.Kubox(ctx, "ctr", "--address", sock, "-n", "k8s.io", "images", "import", "--local", localArchive); err != nil {
			b.Fatalf("ctr import --local: %v\n%s", err, out)
		}
		localTook := time.Since(t0)
		t0 = time.Now()
		if out, err := n.Kubox(ctx, "airgap", "import", "-q", "--data-dir", n.DataDir, "--run-dir", n.RunDir, bundle); err != nil {
			b.Fatalf("kubox airgap import: %v\n%s", err, out)
		}
		kuboxTook := time.Since(t0)
		ctrRate := float64(ctrBytes) / 1e6 / ctrTook.Seconds()
		kuboxRate := float64(m.Size()) / 1e6 / kuboxTook.Seconds()
		localRate := float64(localBytes) / 1e6 / localTook.Seconds()
		report(b, "ctr images import (OCI tar, unpack)", ctrRate, "MB/s")
		report(b, "ctr images import --local (OCI tar, unpack)", localRate, "MB/s")
		report(b, "kubox airgap import (bundle, unpack)", kuboxRate, "MB/s")
		report(b, "kubox/ctr import throughput ratio", kuboxRate/ctrRate, "x")
		report(b, "kubox/ctr --local import throughput ratio", kuboxRate/localRate, "x")

		// Restart with the imported bundle in the images dir: the start
		// reads its manifest, finds it recorded, and skips it.
		if err := os.Rename(bundle, filepath.Join(n.DataDir, "images", "bench.kbundle")); err != nil {
			b.Fatal(err)
		}
		old := time.Now().Add(-time.Minute)
		_ = os.Chtimes(filepath.Join(n.DataDir, "images", "bench.kbundle"), old, old)
		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		logLen := len(readFile(b, n.LogPath))
		restarted := time.Now()
		n.Start()
		if err := n.WaitNodeReadyFast(ctx, restarted); err != nil {
			b.Fatal(err)
		}
		line := regexp.MustCompile(`msg="images dir checked".*`).FindString(string(readFile(b, n.LogPath)[logLen:]))
		took := regexp.MustCompile(`took=(\S+)`).FindStringSubmatch(line)
		if took == nil || !strings.Contains(line, "skipped=1") {
			b.Fatalf("no start-time check that skipped the bundle in the log: %q", line)
		}
		d, err := time.ParseDuration(took[1])
		if err != nil {
			b.Fatal(err)
		}
		report(b, "start-time check, ~300 MB bundle already imported", float64(d.Microseconds())/1000, "ms")
		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

func readFile(b *testing.B, p string) []byte {
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// benchImages makes airgapImages images of random layers, named after set.
func benchImages(b *testing.B, set string) []airgap.Source {
	var out []airgap.Source
	for i := 0; i < airgapImages; i++ {
		img, err := random.Image(airgapLayerBytes, airgapLayers)
		if err != nil {
			b.Fatal(err)
		}
		cfg, _ := img.ConfigFile()
		cfg = cfg.DeepCopy()
		cfg.OS, cfg.Architecture = "linux", "amd64"
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			b.Fatal(err)
		}
		out = append(out, airgap.Source{Name: fmt.Sprintf("localhost/bench-%s/img%d:1", set, i), Image: img})
	}
	return out
}

// writeOCIArchive writes srcs as an OCI layout tar named by containerd's
// annotation, the way `ctr images export` does, and returns the content size.
func writeOCIArchive(b *testing.B, dir, out string, srcs []airgap.Source) int64 {
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, s := range srcs {
		if err := lp.AppendImage(s.Image, layout.WithAnnotations(map[string]string{airgap.AnnotationImageName: s.Name}),
			layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
			b.Fatal(err)
		}
	}
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "blobs") {
			total += fi.Size()
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	return total
}
