package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/embedded/assets"
	"github.com/kubox/kubox/embedded/assets/manifest"
)

// assetsDir is where `make assets` puts the packed runtime assets that
// bin/kubox (and this test binary, through package assets) embeds.
const assetsDir = "../../embedded/assets/files"

// BenchmarkBinary reports what a download of kubox costs: the binary's size,
// zstd-compressed at the default and the best level, and the embedded
// runtime assets' share of it; then what installing those assets costs at a
// first start (time, and bytes the decoder allocated). It needs only
// KUBOX_BIN, not root.
func BenchmarkBinary(b *testing.B) {
	bin := os.Getenv("KUBOX_BIN")
	if bin == "" {
		b.Skip("KUBOX_BIN is not set: run the benchmarks with `make bench`")
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		report(b, "binary size", mib(int64(len(raw))), "MiB")
		for _, level := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedBestCompression} {
			n, took, err := zstdSize(raw, level)
			if err != nil {
				b.Fatal(err)
			}
			report(b, "binary zstd-compressed, level "+level.String(), mib(n), "MiB")
			report(b, "  compressing it, level "+level.String(), took.Seconds(), "s")
		}

		blobs, content, err := assetSizes(assetsDir)
		if err != nil {
			b.Fatal(err)
		}
		report(b, "embedded assets, compressed (in the binary)", mib(blobs), "MiB")
		report(b, "embedded assets, installed", mib(content), "MiB")

		// First-start install: every blob decoded and written.
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		begin := time.Now()
		if err := assets.Install(filepath.Join(b.TempDir(), "bin")); err != nil {
			b.Fatal(err)
		}
		took := time.Since(begin)
		runtime.ReadMemStats(&after)
		report(b, "assets install (first start)", took.Seconds(), "s")
		report(b, "assets install, bytes allocated", mib(int64(after.TotalAlloc-before.TotalAlloc)), "MiB")
	}
}

// zstdSize compresses raw at level with all cores, as a release would.
func zstdSize(raw []byte, level zstd.EncoderLevel) (int64, time.Duration, error) {
	begin := time.Now()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level))
	if err != nil {
		return 0, 0, err
	}
	var n countWriter
	enc.Reset(&n)
	if _, err := enc.Write(raw); err != nil {
		return 0, 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, 0, err
	}
	return int64(n), time.Since(begin), nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// assetSizes sums the packed blobs in dir and the sizes their entries record.
func assetSizes(dir string) (blobs, content int64, err error) {
	entries, err := filepath.Glob(filepath.Join(dir, "*"+manifest.EntrySuffix))
	if err != nil {
		return 0, 0, err
	}
	for _, p := range entries {
		meta, err := os.ReadFile(p)
		if err != nil {
			return 0, 0, err
		}
		e, err := manifest.Parse(meta)
		if err != nil {
			return 0, 0, err
		}
		fi, err := os.Stat(filepath.Join(dir, e.BlobName()))
		if err != nil {
			return 0, 0, err
		}
		blobs += fi.Size()
		content += e.Size
	}
	return blobs, content, nil
}
