package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/embedded/assets/manifest"
)

func TestPack(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tool")
	content := bytes.Repeat([]byte("kubox "), 10000)
	if err := os.WriteFile(src, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "files")
	if err := run([]string{"-o", out, "-component", "tools", "-version", "v1", src}); err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(out, "tool.json"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := manifest.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "tool" || e.Component != "tools" || e.Version != "v1" || e.Kind != manifest.Binary || e.Size != int64(len(content)) {
		t.Errorf("entry = %+v", e)
	}
	blob, err := os.ReadFile(filepath.Join(out, e.BlobName()))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	got, err := dec.DecodeAll(blob, nil)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("blob does not decode to the input (err=%v)", err)
	}
	if len(blob) >= len(content)/10 {
		t.Errorf("blob is %d bytes for %d very repetitive bytes: not compressed?", len(blob), len(content))
	}

	// Same input, same output bytes: make and go build see no change.
	if err := run([]string{"-o", out, "-component", "tools", "-version", "v1", src}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(out, e.BlobName()))
	if !bytes.Equal(again, blob) {
		t.Error("packing the same input twice gave different blobs")
	}
}

func TestPackRejects(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-o", dir, src}, // no version
		{"-o", dir, "-version", "1", "-kind", "tarball", src}, // unknown kind
		{"-o", dir, "-version", "1", "-name", ".hidden", src}, // hidden name
		{"-o", dir, "-version", "1", filepath.Join(dir, "missing")},
		{"-o", dir, "-version", "1", "-dict", "nofile", src},                                // -dict without =FILE
		{"-o", dir, "-version", "1", "-dict", "base=" + filepath.Join(dir, "missing"), src}, // missing dictionary
		{"-o", dir, "-version", "1", "-dict", "x=" + src, src},                              // its own dictionary
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

func TestPackWithDictionary(t *testing.T) {
	dir := t.TempDir()
	shared := bytes.Repeat([]byte("code both programs share, 0123456789abcdef "), 3000)
	base := filepath.Join(dir, "base")
	src := filepath.Join(dir, "tool")
	content := append(append([]byte{}, shared...), "tool's own part"...)
	if err := os.WriteFile(base, append(shared, "base's own part"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "files")
	if err := run([]string{"-o", out, "-version", "v1", base}); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-o", out, "-version", "v1", "-dict", "base=" + base, src}); err != nil {
		t.Fatal(err)
	}
	readEntry := func(name string) manifest.Entry {
		meta, err := os.ReadFile(filepath.Join(out, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		e, err := manifest.Parse(meta)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	baseEntry, e := readEntry("base"), readEntry("tool")
	if e.Dict != "base" || baseEntry.Dict != "" {
		t.Fatalf("dict fields: tool %q, base %q", e.Dict, baseEntry.Dict)
	}
	blob, err := os.ReadFile(filepath.Join(out, e.BlobName()))
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) > 200 {
		t.Errorf("blob is %d bytes though the dictionary holds almost all of it", len(blob))
	}
	dict, _ := os.ReadFile(base)
	// Decoded the way kubox does: the ID from the dictionary's own entry.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDictRaw(baseEntry.DictID(), dict))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	got, err := dec.DecodeAll(blob, nil)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("blob does not decode to the input with the dictionary (err=%v)", err)
	}
}
