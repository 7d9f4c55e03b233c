package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

// benchDB returns n bytes that compress roughly like an etcd db: 4 KiB
// pages holding key/value records (registry paths, JSON with random ids
// and payloads), partly filled, with some free (zero) pages.
func benchDB(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	word := func(k int) string {
		b := make([]byte, k)
		for i := range b {
			b[i] = alnum[r.IntN(len(alnum))]
		}
		return string(b)
	}
	db := make([]byte, 0, n)
	page := make([]byte, 4096)
	for len(db) < n {
		clear(page)
		if r.IntN(10) != 0 { // one page in ten is free
			var b bytes.Buffer
			for b.Len() < 3000+r.IntN(1000) {
				ns, name := r.IntN(50), r.IntN(100000)
				fmt.Fprintf(&b, "/registry/configmaps/ns-%02d/cm-%06d", ns, name)
				fmt.Fprintf(&b, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%06d","namespace":"ns-%02d","uid":"%s-%s-%s","resourceVersion":"%d"},"data":{"value":"%s"}}`,
					name, ns, word(8), word(4), word(12), r.IntN(1<<30), word(20+r.IntN(60)))
			}
			copy(page, b.Bytes())
		}
		db = append(db, page...)
	}
	return db[:n]
}

// onlyReader hides io.WriterTo, so both sides read the db in chunks as they
// would from etcd's snapshot stream.
type onlyReader struct{ io.Reader }

// BenchmarkWrite compares Write (tar, zstd, age, fsync, rename) with a plain
// io.Copy of the same stream to a file with fsync, which is what etcd's own
// snapshot save does. Each reports MB/s of db input.
func BenchmarkWrite(b *testing.B) {
	db := benchDB(64 << 20)
	key := newKey(b)
	b.Run("snapshot", func(b *testing.B) {
		dir := b.TempDir()
		b.SetBytes(int64(len(db)))
		var size int64
		for b.Loop() {
			e, err := Write(context.Background(), dir, onlyReader{bytes.NewReader(db)}, WriteOptions{Header: testHeader(), Key: key, Signer: testSigner})
			if err != nil {
				b.Fatal(err)
			}
			size = e.Size
			os.Remove(e.Path)
		}
		b.ReportMetric(float64(size)/float64(len(db)), "file/db")
	})
	b.Run("plain-copy", func(b *testing.B) {
		dir := b.TempDir()
		b.SetBytes(int64(len(db)))
		for b.Loop() {
			f, err := os.CreateTemp(dir, "db-*")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(f, onlyReader{bytes.NewReader(db)}); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			os.Remove(f.Name())
		}
		b.ReportMetric(1, "file/db")
	})
}

// BenchmarkVerify measures reading back (decrypt, decompress, check) a
// snapshot of the same db, in MB/s of db: the verification pass of a restore.
func BenchmarkVerify(b *testing.B) {
	db := benchDB(64 << 20)
	key := newKey(b)
	e, err := Write(context.Background(), b.TempDir(), onlyReader{bytes.NewReader(db)}, WriteOptions{Header: testHeader(), Key: key, Signer: testSigner})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(db)))
	for b.Loop() {
		if _, err := Verify(e.Path, key, testTrust); err != nil {
			b.Fatal(err)
		}
	}
}
