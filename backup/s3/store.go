package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kubox/kubox/backup"
)

const (
	// DefaultPartSize is the size of a multipart upload's parts, and so
	// about half the memory an upload holds (see upload). S3 wants at least
	// 5 MiB for every part but the last.
	DefaultPartSize = 8 << 20
	minPartSize     = 5 << 20
	// DefaultStaleAfter: incomplete uploads under the box's prefix older
	// than this are aborted before the next one starts (a killed kubox, or
	// an object store that went away mid-upload, leaves them behind).
	DefaultStaleAfter = time.Hour
	// Scheme starts an object store snapshot's URL: s3://bucket/key.
	Scheme = "s3://"
)

// Store is one box's view of the object store.
type Store struct {
	cfg  Config
	cl   *minio.Client
	core minio.Core
	root string // Prefix + "/", or "" (every box)
	box  string // root + node + "/" (this box)

	// PartSize is the multipart part size (at least 5 MiB).
	PartSize int64
	// StaleAfter is how old an incomplete upload must be to be aborted.
	StaleAfter time.Duration
	// Progress, if set, gets one human line per uploaded part and per
	// second of a download.
	Progress func(string)

	// failed are this process's uploads whose abort failed (the store was
	// unreachable); the next upload aborts them. Not every store lists
	// incomplete uploads by prefix (MinIO lists them by exact name only),
	// so AbortStale cannot be relied on alone.
	mu     sync.Mutex
	failed []pendingUpload
}

type pendingUpload struct{ key, id string }

// New returns the store of cfg for the box called node (the directory its
// snapshots go to; "" for a store that only reads, such as a replacement
// box's restore).
func New(cfg Config, node string) (*Store, error) {
	cl, err := cfg.client()
	if err != nil {
		return nil, err
	}
	root := strings.Trim(cfg.Prefix, "/")
	if root != "" {
		root += "/"
	}
	s := &Store{cfg: cfg, cl: cl, core: minio.Core{Client: cl}, root: root, box: root,
		PartSize: DefaultPartSize, StaleAfter: DefaultStaleAfter}
	if node != "" {
		s.box = root + fileSafe(node) + "/"
	}
	return s, nil
}

// Location is where this box's snapshots go: s3://bucket/prefix/node/.
func (s *Store) Location() string { return s.URL(s.box) }

// URL is the s3:// URL of key in the store's bucket.
func (s *Store) URL(key string) string { return Scheme + s.cfg.Bucket + "/" + key }

// ParseURL splits s3://bucket/key.
func ParseURL(u string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(u, Scheme)
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", u)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q: give s3://BUCKET/PREFIX/NAME", u)
	}
	return bucket, key, nil
}

// IsURL says whether s names an object store snapshot.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// Check asks the object store whether the bucket is there and the
// credentials are good.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := s.cl.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return s.describe("check bucket "+s.cfg.Bucket, err)
	}
	if !ok {
		return fmt.Errorf("S3 bucket %q does not exist at %s: create it (kubox does not create buckets)", s.cfg.Bucket, s.cfg.Endpoint)
	}
	return nil
}

// describe turns an object store error into one line that says what to do.
func (s *Store) describe(what string, err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ue) {
		// Not the URL: it may carry the upload ID and query.
		err = ue.Err
	}
	switch code := minio.ToErrorResponse(err).Code; code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
		src := "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
		if s.cfg.CredentialsFile != "" {
			src = s.cfg.CredentialsFile
		}
		return fmt.Errorf("S3 %s: %s refused the credentials (%s): check %s", what, s.cfg.Endpoint, code, src)
	case "NoSuchBucket":
		return fmt.Errorf("S3 %s: bucket %q does not exist at %s: create it", what, s.cfg.Bucket, s.cfg.Endpoint)
	case "NoSuchKey":
		return fmt.Errorf("S3 %s: no such object: %w", what, os.ErrNotExist)
	default:
		if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("S3 %s: cannot reach %s: %w", what, s.cfg.Endpoint, err)
		}
		return fmt.Errorf("S3 %s at %s: %w", what, s.cfg.Endpoint, err)
	}
}

// Entry is one snapshot in the object store.
type Entry struct {
	URL          string
	Key          string
	Size         int64
	LastModified time.Time
	ETag         string
	Header       backup.Header // not authenticated
	Err          error         // why the header could not be read
}

// List returns the snapshots of this box, or with all those of every box
// under the prefix, newest first.
func (s *Store) List(ctx context.Context, all bool) ([]Entry, error) {
	prefix := s.box
	if all {
		prefix = s.root
	}
	var out []Entry
	for o := range s.cl.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, s.describe("list "+s.URL(prefix), o.Err)
		}
		if !strings.HasSuffix(o.Key, backup.Extension) {
			continue
		}
		e := Entry{URL: s.URL(o.Key), Key: o.Key, Size: o.Size, LastModified: o.LastModified, ETag: o.ETag}
		e.Header, e.Err = s.header(ctx, o.Key)
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := out[i].when(), out[j].when()
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return out[i].Key > out[j].Key
	})
	return out, nil
}

func (e Entry) when() time.Time {
	if e.Err == nil {
		return e.Header.CreatedAt
	}
	return e.LastModified
}

// header reads the plaintext header of key with one ranged GET.
func (s *Store) header(ctx context.Context, key string) (backup.Header, error) {
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(0, int64(backup.MaxPrefixLen-1)); err != nil {
		return backup.Header{}, err
	}
	rc, _, _, err := s.core.GetObject(ctx, s.cfg.Bucket, key, opts)
	if err != nil {
		return backup.Header{}, s.describe("read "+s.URL(key), err)
	}
	defer rc.Close()
	return backup.ParseHeader(rc)
}

// Latest is the newest readable snapshot under the whole prefix (any box:
// a replacement box restores its predecessor's). Snapshots of several
// clusters under one prefix make it refuse: which one is meant?
func (s *Store) Latest(ctx context.Context) (Entry, error) {
	entries, err := s.List(ctx, true)
	if err != nil {
		return Entry{}, err
	}
	clusters := map[string]bool{}
	var newest *Entry
	for i := range entries {
		if entries[i].Err != nil {
			continue
		}
		clusters[entries[i].Header.ClusterID] = true
		if newest == nil {
			newest = &entries[i]
		}
	}
	if newest == nil {
		return Entry{}, fmt.Errorf("no snapshot under %s", s.URL(s.root))
	}
	if len(clusters) > 1 {
		return Entry{}, fmt.Errorf("snapshots of %d clusters under %s: give the one to restore with --snapshot s3://... (see kubox snapshot ls)", len(clusters), s.URL(s.root))
	}
	return *newest, nil
}

// Source opens the snapshot at url (s3://bucket/key; the bucket may differ
// from the configured one) for backup.Restore or verify. Every read is
// pinned to the object's ETag when opened, so the two reads of a restore
// see the same object.
func (s *Store) Source(ctx context.Context, url string) (*backup.Source, int64, error) {
	bucket, key, err := ParseURL(url)
	if err != nil {
		return nil, 0, err
	}
	if key == "" || strings.HasSuffix(key, "/") {
		return nil, 0, fmt.Errorf("%s names no snapshot: give s3://BUCKET/PREFIX/NAME%s (see kubox snapshot ls)", url, backup.Extension)
	}
	st, err := s.cl.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return nil, 0, s.describe("open "+url, err)
	}
	src := &backup.Source{Name: url, Open: func(ctx context.Context) (io.ReadCloser, error) {
		opts := minio.GetObjectOptions{}
		if err := opts.SetMatchETag(st.ETag); err != nil {
			return nil, err
		}
		rc, _, _, err := s.core.GetObject(ctx, bucket, key, opts)
		if err != nil {
			return nil, s.describe("read "+url, err)
		}
		if s.Progress == nil {
			return rc, nil
		}
		rr := &backup.RateReader{R: rc, Report: func(n int64, rate float64) {
			s.Progress(fmt.Sprintf("read %s of %s from %s (%s/s)", backup.HumanBytes(n), backup.HumanBytes(st.Size), url, backup.HumanBytes(int64(rate))))
		}}
		return struct {
			io.Reader
			io.Closer
		}{rr, rc}, nil
	}}
	return src, st.Size, nil
}

// Remove deletes one snapshot: a name under this box's prefix, or a URL
// under it (under the whole prefix for a store opened without a node).
func (s *Store) Remove(ctx context.Context, name string) (string, error) {
	key := s.box + name
	if IsURL(name) {
		bucket, k, err := ParseURL(name)
		if err != nil {
			return "", err
		}
		if bucket != s.cfg.Bucket || !strings.HasPrefix(k, s.box) {
			return "", fmt.Errorf("remove %s: not under %s", name, s.Location())
		}
		key, name = k, path.Base(k)
	}
	if !strings.HasSuffix(key, backup.Extension) || strings.Contains(name, "/") {
		return "", fmt.Errorf("remove %q: give a snapshot name from \"kubox snapshot ls\"", name)
	}
	if err := s.cl.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return "", s.describe("remove "+s.URL(key), err)
	}
	return s.URL(key), nil
}

// Prune keeps the newest keep scheduled snapshots of this box (of cluster
// clusterID, when given) and removes the older ones. Manual snapshots,
// other boxes' and unreadable objects are never removed.
func (s *Store) Prune(ctx context.Context, keep int, clusterID string) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune %s: keep must be at least 1, got %d", s.Location(), keep)
	}
	entries, err := s.List(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var removed []string
	kept := 0
	for _, e := range entries {
		if e.Err != nil || !e.Header.Scheduled || (clusterID != "" && e.Header.ClusterID != clusterID) {
			continue
		}
		if kept < keep {
			kept++
			continue
		}
		if err := s.cl.RemoveObject(ctx, s.cfg.Bucket, e.Key, minio.RemoveObjectOptions{}); err != nil {
			return removed, s.describe("prune "+e.URL, err)
		}
		removed = append(removed, e.URL)
	}
	return removed, nil
}

// AbortStale aborts this box's incomplete multipart uploads that began more
// than StaleAfter ago, and those of this process that could not be aborted
// when they failed, and returns their URLs.
func (s *Store) AbortStale(ctx context.Context) ([]string, error) {
	var aborted []string
	s.mu.Lock()
	failed := s.failed
	s.failed = nil
	s.mu.Unlock()
	for i, u := range failed {
		err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.key, u.id)
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			s.mu.Lock()
			s.failed = append(s.failed, failed[i:]...)
			s.mu.Unlock()
			return aborted, s.describe("abort the incomplete upload of "+s.URL(u.key), err)
		}
		aborted = append(aborted, s.URL(u.key))
	}
	for u := range s.cl.ListIncompleteUploads(ctx, s.cfg.Bucket, s.box, true) {
		if u.Err != nil {
			return aborted, s.describe("list incomplete uploads under "+s.Location(), u.Err)
		}
		if time.Since(u.Initiated) < s.StaleAfter {
			continue
		}
		if err := s.core.AbortMultipartUpload(ctx, s.cfg.Bucket, u.Key, u.UploadID); err != nil {
			return aborted, s.describe("abort the incomplete upload of "+s.URL(u.Key), err)
		}
		aborted = append(aborted, s.URL(u.Key))
	}
	return aborted, nil
}

// freeKey returns the key for a new snapshot named name under this box:
// name, or name-2, -3, ... when one of that name exists already (two
// snapshots in the same second).
func (s *Store) freeKey(ctx context.Context, name string) (string, error) {
	base := strings.TrimSuffix(name, backup.Extension)
	for i := 1; i <= 100; i++ {
		key := s.box + name
		if i > 1 {
			key = fmt.Sprintf("%s%s-%d%s", s.box, base, i, backup.Extension)
		}
		_, err := s.cl.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return key, nil
		}
		if err != nil {
			return "", s.describe("look for "+s.URL(key), err)
		}
	}
	return "", fmt.Errorf("%s%s: too many snapshots with that name", s.URL(s.box), name)
}

// Upload copies the local snapshot file path to this box's prefix, under
// its own name, unless it is there already. It is all or nothing: the
// object appears only once every byte is stored.
func (s *Store) Upload(ctx context.Context, file string) (string, error) {
	key := s.box + filepath.Base(file)
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("upload snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("upload snapshot: %w", err)
	}
	if st, err := s.cl.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{}); err == nil && st.Size == fi.Size() {
		return s.URL(key), nil
	}
	if _, err := s.AbortStale(ctx); err != nil {
		return "", err
	}
	rr := &backup.RateReader{R: f, Report: func(n int64, rate float64) {
		if s.Progress != nil {
			s.Progress(fmt.Sprintf("uploaded %s of %s to %s (%s/s)", backup.HumanBytes(n), backup.HumanBytes(fi.Size()), s.URL(key), backup.HumanBytes(int64(rate))))
		}
	}}
	if _, err := s.cl.PutObject(ctx, s.cfg.Bucket, key, rr, fi.Size(), minio.PutObjectOptions{
		ContentType: "application/octet-stream", PartSize: uint64(max(s.PartSize, minPartSize)), NumThreads: 1,
	}); err != nil {
		return "", s.describe("upload "+s.URL(key), err)
	}
	return s.URL(key), nil
}

// fileSafe maps a node name to object-name-safe characters, as snapshot
// file names do.
func fileSafe(n string) string {
	b := []byte(path.Clean("/" + n)[1:])
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
