package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/internal/s3test"
)

// These tests run against a real S3 server (MinIO) on loopback.

type keys struct {
	key    *backup.Key
	signer *backup.SigningKey
	trust  backup.Trust
}

func newKeys(t *testing.T) keys {
	t.Helper()
	k, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := backup.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return keys{key: k, signer: s, trust: backup.Trust{Signer: s.Public()}}
}

func testConfig(srv *s3test.Server, dir string) Config {
	return Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "site-1", Insecure: true, PathStyle: true,
		CredentialsFile: srv.CredentialsFile(dir)}
}

func newStore(t *testing.T, srv *s3test.Server, node string) *Store {
	t.Helper()
	st, err := New(testConfig(srv, t.TempDir()), node)
	if err != nil {
		t.Fatal(err)
	}
	st.PartSize = minPartSize
	return st
}

// incompressible returns n pseudo-random bytes: the db that makes the most
// parts.
func incompressible(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func save(ctx context.Context, st *Store, k keys, db io.Reader, name string, scheduled bool, at time.Time) (backup.Entry, error) {
	return backup.WriteTo(ctx, db, backup.WriteOptions{
		Header: backup.Header{NodeName: "box-1", ClusterID: "c1", Name: name, Scheduled: scheduled, CreatedAt: at},
		Key:    k.key, Signer: k.signer,
	}, st.Create)
}

func objects(t *testing.T, srv *s3test.Server) []string {
	t.Helper()
	var keys []string
	for o := range srv.Client().ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// incomplete counts the incomplete uploads of key (MinIO lists them by
// exact object name only).
func incomplete(t *testing.T, srv *s3test.Server, key string) int {
	t.Helper()
	n := 0
	for u := range srv.Client().ListIncompleteUploads(context.Background(), srv.Bucket, key, true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		n++
	}
	return n
}

func TestStreamUploadRoundTrip(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	st := newStore(t, srv, "box-1")
	k := newKeys(t)
	ctx := context.Background()
	// Small (one PUT) and large (held-back first part, several parts, a
	// short last one).
	for _, size := range []int{1000, 3*minPartSize + 12345} {
		db := incompressible(size, uint64(size))
		e, err := save(ctx, st, k, bytes.NewReader(db), "manual", false, time.Now())
		if err != nil {
			t.Fatalf("upload %d bytes: %v", size, err)
		}
		if !strings.HasPrefix(e.Path, "s3://kubox/site-1/box-1/manual-box-1-") {
			t.Errorf("object URL %s, want it under s3://kubox/site-1/box-1/", e.Path)
		}
		src, n, err := st.Source(ctx, e.Path)
		if err != nil {
			t.Fatal(err)
		}
		if n != e.Size {
			t.Errorf("object is %d bytes, upload said %d", n, e.Size)
		}
		rc, err := src.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h, err := backup.VerifyReader(rc, e.Path, k.key, k.trust)
		rc.Close()
		if err != nil {
			t.Fatalf("verify %d-byte db from S3: %v", size, err)
		}
		if h.EtcdDBSize != int64(size) {
			t.Errorf("db size %d, want %d", h.EtcdDBSize, size)
		}
		// Extracted through a restore's path: every byte of the db back.
		dir := filepath.Join(t.TempDir(), "x")
		if _, err := extract(ctx, src, k, dir); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "etcd.db"))
		if err != nil || !bytes.Equal(got, db) {
			t.Fatalf("extracted db differs (%d bytes, %v)", len(got), err)
		}
	}
	entries, err := st.List(ctx, true)
	if err != nil || len(entries) != 2 {
		t.Fatalf("list: %d entries, %v; want 2", len(entries), err)
	}

	// An object that is complete for S3 but holds a cut-off snapshot (a
	// copy cut short by some other tool) is no snapshot: the format's own
	// end and signature say so.
	rc, err := srv.Client().GetObject(ctx, srv.Bucket, entries[0].Key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	cut := "site-1/box-1/cut" + backup.Extension
	if _, err := srv.Client().PutObject(ctx, srv.Bucket, cut, bytes.NewReader(whole[:len(whole)-100]), int64(len(whole)-100), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	src, _, err := st.Source(ctx, st.URL(cut))
	if err != nil {
		t.Fatal(err)
	}
	rc2, _ := src.Open(ctx)
	defer rc2.Close()
	if _, err := backup.VerifyReader(rc2, cut, k.key, k.trust); !errors.Is(err, backup.ErrCorrupted) && !errors.Is(err, backup.ErrBadSignature) {
		t.Errorf("verify a cut-off object: %v; want it refused as corrupted", err)
	}
}

// extract reads the snapshot as backup.Restore does after verifying.
func extract(ctx context.Context, src *backup.Source, k keys, dir string) (backup.Header, error) {
	rc, err := src.Open(ctx)
	if err != nil {
		return backup.Header{}, err
	}
	defer rc.Close()
	tmp := dir + ".kbsnap"
	f, err := os.Create(tmp)
	if err != nil {
		return backup.Header{}, err
	}
	if _, err := io.Copy(f, rc); err != nil {
		return backup.Header{}, err
	}
	f.Close()
	return backup.Extract(tmp, k.key, k.trust, dir)
}

// failingReader fails after n bytes, calling before first.
type failingReader struct {
	r      io.Reader
	n      int
	before func()
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		if f.before != nil {
			f.before()
			f.before = nil
		}
		return 0, errors.New("etcd stream broken")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestCutUploadLeavesNoObject(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	st := newStore(t, srv, "box-1")
	k := newKeys(t)
	ctx := context.Background()
	db := incompressible(6*minPartSize, 1)

	// The stream breaks after parts went up: the upload is aborted.
	if _, err := save(ctx, st, k, &failingReader{r: bytes.NewReader(db), n: 3 * minPartSize}, "manual", false, time.Now()); err == nil {
		t.Fatal("upload of a broken stream succeeded")
	}
	if o := objects(t, srv); len(o) != 0 {
		t.Errorf("objects after a broken stream: %v", o)
	}
	if len(st.failed) != 0 {
		t.Errorf("uploads left to abort after an aborted one: %v", st.failed)
	}

	// The server dies mid-upload: nothing that looks complete, and the
	// next upload, once it is back, works and sweeps the stale one.
	_, err := save(ctx, st, k, &failingReader{r: bytes.NewReader(db), n: 5 * minPartSize, before: srv.Kill}, "manual", false, time.Now())
	if err == nil {
		t.Fatal("upload with the server killed succeeded")
	}
	t.Logf("server killed mid-upload: %v", err)
	srv.Restart()
	if o := objects(t, srv); len(o) != 0 {
		t.Errorf("objects after the server died mid-upload: %v", o)
	}
	if len(st.failed) != 1 {
		t.Fatalf("uploads left to abort after the server died mid-upload: %v, want 1", st.failed)
	}
	stale := st.failed[0].key
	if n := incomplete(t, srv, stale); n != 1 {
		t.Errorf("%d incomplete uploads of %s after the server died mid-upload, want the 1 it could not abort", n, stale)
	}
	e, err := save(ctx, st, k, bytes.NewReader(db), "manual", false, time.Now())
	if err != nil {
		t.Fatalf("upload after the server came back: %v", err)
	}
	if n := incomplete(t, srv, stale); n != 0 || len(st.failed) != 0 {
		t.Errorf("%d incomplete uploads of %s left; the next upload should abort it", n, stale)
	}
	src, _, err := st.Source(ctx, e.Path)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := src.Open(ctx)
	defer rc.Close()
	if _, err := backup.VerifyReader(rc, e.Path, k.key, k.trust); err != nil {
		t.Fatal(err)
	}
}

func TestPruneOnlyThisBox(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	st := newStore(t, srv, "box-1")
	other := newStore(t, srv, "box-2")
	k := newKeys(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range 4 {
		if _, err := save(ctx, st, k, bytes.NewReader([]byte("db")), "scheduled", true, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := save(ctx, st, k, bytes.NewReader([]byte("db")), "keep-me", false, t0); err != nil {
		t.Fatal(err)
	}
	// Box 2's old scheduled snapshot: box 1's retention must not touch it.
	if _, err := backup.WriteTo(ctx, bytes.NewReader([]byte("db")), backup.WriteOptions{
		Header: backup.Header{NodeName: "box-2", ClusterID: "c1", Scheduled: true, CreatedAt: t0.Add(-time.Hour)}, Key: k.key, Signer: k.signer,
	}, other.Create); err != nil {
		t.Fatal(err)
	}
	removed, err := st.Prune(ctx, 2, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Errorf("removed %v, want the 2 oldest scheduled ones of box-1", removed)
	}
	left := objects(t, srv)
	var sched, manual, box2 int
	for _, o := range left {
		switch {
		case strings.HasPrefix(o, "site-1/box-2/"):
			box2++
		case strings.Contains(o, "/scheduled-"):
			sched++
		case strings.Contains(o, "/keep-me-"):
			manual++
		}
	}
	if sched != 2 || manual != 1 || box2 != 1 {
		t.Errorf("left %v; want 2 scheduled and 1 manual of box-1, and box-2's", left)
	}
	latest, err := st.Latest(ctx)
	if err != nil || !latest.Header.CreatedAt.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("latest: %+v %v; want the newest scheduled one", latest.Key, err)
	}
}

func TestBadCredentialsAndConfig(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	dir := t.TempDir()
	cfg := testConfig(srv, dir)
	ctx := context.Background()

	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("aws_access_key_id=nobody\naws_secret_access_key=wrong-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.CredentialsFile = wrong
	st, err := New(c, "box-1")
	if err != nil {
		t.Fatal(err)
	}
	err = st.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), "\n") {
		t.Errorf("wrong credentials: %v; want one line saying the credentials were refused and naming the file", err)
	}

	if err := os.Chmod(wrong, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, "box-1"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("credentials file 0644: %v; want a refusal", err)
	}
	c = cfg
	c.Insecure = false
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "snapshot-s3-insecure") {
		t.Errorf("http endpoint without insecure: %v", err)
	}
	c = cfg
	c.Bucket = "no-such-bucket"
	st, err = New(c, "box-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	c = cfg
	c.CredentialsFile = ""
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	if st, err = New(c, "box-1"); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Errorf("credentials from the environment: %v", err)
	}
}

func TestTLSWithCABundle(t *testing.T) {
	srv := s3test.StartTLS(t, "127.0.0.1")
	cfg := testConfig(srv, t.TempDir())
	cfg.Insecure = false
	ctx := context.Background()
	// Without the CA the store's certificate is refused: no skip-verify.
	st, err := New(cfg, "box-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS store without its CA: %v; want a certificate error", err)
	}
	cfg.CAFile = srv.CAFile
	if st, err = New(cfg, "box-1"); err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Errorf("TLS store with snapshot-s3-ca-file: %v", err)
	}
	k := newKeys(t)
	if _, err := save(ctx, st, k, bytes.NewReader(incompressible(2*minPartSize+1, 3)), "manual", false, time.Now()); err != nil {
		t.Errorf("upload over TLS: %v", err)
	}
}

// A local snapshot copied up (snapshot-s3-keep-local): the same bytes, and
// a second copy is a no-op.
func TestUploadLocalCopy(t *testing.T) {
	srv := s3test.Start(t, "127.0.0.1")
	st := newStore(t, srv, "box-1")
	k := newKeys(t)
	ctx := context.Background()
	e, err := backup.Write(ctx, t.TempDir(), bytes.NewReader(incompressible(2*minPartSize+7, 5)), backup.WriteOptions{
		Header: backup.Header{NodeName: "box-1", ClusterID: "c1", Scheduled: true}, Key: k.key, Signer: k.signer,
	})
	if err != nil {
		t.Fatal(err)
	}
	url, err := st.Upload(ctx, e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if want := st.URL("site-1/box-1/" + filepath.Base(e.Path)); url != want {
		t.Errorf("uploaded to %s, want %s", url, want)
	}
	if again, err := st.Upload(ctx, e.Path); err != nil || again != url {
		t.Errorf("second upload: %s %v", again, err)
	}
	src, size, err := st.Source(ctx, url)
	if err != nil || size != e.Size {
		t.Fatalf("source %s: %d bytes, %v; want %d", url, size, err, e.Size)
	}
	rc, _ := src.Open(ctx)
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	local, _ := os.ReadFile(e.Path)
	if !bytes.Equal(got, local) {
		t.Errorf("object differs from the local file")
	}
}
