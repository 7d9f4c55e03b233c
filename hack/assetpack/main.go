// Command assetpack turns one file into a runtime asset that package
// embedded/assets embeds: DIR/NAME.zst (the content, zstd-compressed) and
// DIR/NAME.json (its manifest.Entry: version, size and digest of the
// uncompressed content).
//
//	assetpack -o embedded/assets/files -component runc -version 1.5.2 -kind binary hack/out/runc-1.5.2/runc
//
// With -dict NAME=FILE the content is compressed against FILE, the
// uncompressed content of asset NAME, used as a raw zstd dictionary; the entry
// records NAME so kubox decodes it the same way. The Go binaries share most of
// their code, so this shrinks them to a third or less:
//
//	assetpack ... -dict containerd-shim-runc-v2=hack/out/shim/containerd-shim-runc-v2 hack/out/containerd/containerd
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
	"strings"

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
	dictArg := fs.String("dict", "", "NAME=FILE: compress against FILE, the content of asset NAME, as a raw dictionary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *outDir == "" || *version == "" {
		return errors.New("usage: assetpack -o DIR -version V [-name N] [-component C] [-kind binary|image] [-dict NAME=FILE] FILE")
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
	var dict *dictionary
	if *dictArg != "" {
		dictName, dictFile, ok := strings.Cut(*dictArg, "=")
		if !ok || dictName == "" || dictFile == "" {
			return fmt.Errorf("-dict %q: want NAME=FILE", *dictArg)
		}
		content, err := os.ReadFile(dictFile)
		if err != nil {
			return fmt.Errorf("reading dictionary: %w", err)
		}
		// The ID comes from the dictionary's own entry, which kubox reads
		// back when it decodes this asset.
		dsum := sha256.Sum256(content)
		id := manifest.Entry{SHA256: hex.EncodeToString(dsum[:])}.DictID()
		dict = &dictionary{id: id, content: content}
		entry.Dict = dictName
	}
	meta, err := entry.Marshal()
	if err != nil {
		return err
	}
	blob, err := compress(raw, dict)
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
	via := ""
	if entry.Dict != "" {
		via = " (dictionary: " + entry.Dict + ")"
	}
	fmt.Printf("%s %s: %d -> %d bytes%s\n", entry.Component, entry.Name, len(raw), len(blob), via)
	return nil
}

// dictionary is a raw zstd dictionary: another asset's content.
type dictionary struct {
	id      uint32
	content []byte
}

// dictWindow is the window used with a dictionary: matches reach back across
// the dictionary (the shim, about 10 MB) and what came before. Decoding needs
// this much memory at most beside the dictionary; 64 MB would save only
// 0.24 MB more (containerd 10.21 -> 9.97 MB), 16 MB would cost 0.94 MB.
const dictWindow = 32 << 20

// compress encodes raw as a single zstd frame and checks the round trip, so a
// broken blob fails the build rather than a user's first start.
func compress(raw []byte, dict *dictionary) ([]byte, error) {
	// One goroutine keeps the output independent of the machine's core count.
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
	}
	dopts := []zstd.DOption{zstd.WithDecoderConcurrency(1)}
	if dict != nil {
		opts = append(opts, zstd.WithEncoderDictRaw(dict.id, dict.content), zstd.WithWindowSize(dictWindow))
		dopts = append(dopts, zstd.WithDecoderDictRaw(dict.id, dict.content))
	}
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		return nil, err
	}
	blob := enc.EncodeAll(raw, nil)
	if err := enc.Close(); err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, dopts...)
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
