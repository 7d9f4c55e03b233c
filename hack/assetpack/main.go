// Command assetpack turns one file into a runtime asset that package
// embedded/assets embeds: DIR/NAME.zst (the content, zstd-compressed) and
// DIR/NAME.json (its manifest.Entry: version, size and digest of the
// uncompressed content).
//
//	assetpack -o embedded/assets/files -component runc -version 1.5.2 -kind binary hack/out/runc-1.5.2/runc
//
// The output is a pure function of the input and the flags, so rebuilding an
// unchanged asset changes nothing that go build would notice.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/embedded/assets/manifest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "assetpack:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("assetpack", flag.ContinueOnError)
	outDir := fs.String("o", "", "output directory (required)")
	name := fs.String("name", "", "asset name (default: the input file's base name)")
	component := fs.String("component", "", "component the asset belongs to, for version reporting (default: the name)")
	version := fs.String("version", "", "component version (required)")
	kind := fs.String("kind", string(manifest.Binary), "asset kind: binary or image")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *outDir == "" || *version == "" {
		return errors.New("usage: assetpack -o DIR -version V [-name N] [-component C] [-kind binary|image] FILE")
	}
	src := fs.Arg(0)
	if *name == "" {
		*name = filepath.Base(src)
	}
	if *component == "" {
		*component = *name
	}

	raw, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}
	sum := sha256.Sum256(raw)
	entry := manifest.Entry{
		Name:      *name,
		Component: *component,
		Version:   *version,
		Kind:      manifest.Kind(*kind),
		Size:      int64(len(raw)),
		SHA256:    hex.EncodeToString(sum[:]),
	}
	meta, err := entry.Marshal()
	if err != nil {
		return err
	}
	blob, err := compress(raw)
	if err != nil {
		return fmt.Errorf("compressing %s: %w", src, err)
	}
	// Blob first, entry last: the entry is what make tracks and what the
	// runtime looks for, so it must never point at a missing blob.
	if err := writeAtomic(filepath.Join(*outDir, entry.BlobName()), blob); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(*outDir, entry.EntryName()), meta); err != nil {
		return err
	}
	fmt.Printf("%s %s: %d -> %d bytes\n", entry.Component, entry.Name, len(raw), len(blob))
	return nil
}

// compress encodes raw as a single zstd frame and checks the round trip, so a
// broken blob fails the build rather than a user's first start.
func compress(raw []byte) ([]byte, error) {
	// One goroutine keeps the output independent of the machine's core count.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	blob := enc.EncodeAll(raw, nil)
	if err := enc.Close(); err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	back, err := dec.DecodeAll(blob, nil)
	if err != nil {
		return nil, fmt.Errorf("verifying: %w", err)
	}
	if !bytes.Equal(back, raw) {
		return nil, errors.New("verifying: round trip changed the content")
	}
	return blob, nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
