package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/backup/s3"
	"github.com/kubox/kubox/server"
)

// registerS3Flags adds the snapshot-s3-* keys of kubox server.
func registerS3Flags(fs *pflag.FlagSet, c *server.Config) {
	s := &c.SnapshotS3
	fs.StringVar(&s.Endpoint, "snapshot-s3-endpoint", s.Endpoint, "S3-compatible object store that snapshots stream to: host[:port] or https://host[:port] (http:// only with --snapshot-s3-insecure); empty: none")
	fs.StringVar(&s.Bucket, "snapshot-s3-bucket", s.Bucket, "bucket for snapshots (must exist)")
	fs.StringVar(&s.Prefix, "snapshot-s3-prefix", s.Prefix, "object name prefix; each box writes under <prefix>/<node-name>/")
	fs.StringVar(&s.Region, "snapshot-s3-region", s.Region, "bucket region (default: asked from the store, or us-east-1)")
	fs.StringVar(&s.CredentialsFile, "snapshot-s3-credentials-file", s.CredentialsFile, "file (0600) with aws_access_key_id and aws_secret_access_key (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY)")
	fs.StringVar(&s.CAFile, "snapshot-s3-ca-file", s.CAFile, "PEM CA bundle trusted for the object store besides the system's")
	fs.BoolVar(&s.PathStyle, "snapshot-s3-path-style", s.PathStyle, "address the bucket as https://host/bucket (MinIO, SeaweedFS, Garage) instead of https://bucket.host")
	fs.BoolVar(&s.Insecure, "snapshot-s3-insecure", s.Insecure, "allow a plain http:// endpoint (snapshots stay encrypted and signed; the store's traffic is not)")
	fs.BoolVar(&c.SnapshotS3KeepLocal, "snapshot-s3-keep-local", c.SnapshotS3KeepLocal, "with an object store, keep a copy of each snapshot in the snapshot dir too (written first, then uploaded)")
}

// s3Flags are the object store keys that the snapshot and restore verbs
// take too, so a replacement box needs no config file.
var s3Flags = []sharedFlag{
	{name: "snapshot-s3-endpoint", usage: "S3-compatible object store (host[:port] or https://host[:port])"},
	{name: "snapshot-s3-bucket", usage: "bucket of the snapshots"},
	{name: "snapshot-s3-prefix", usage: "object name prefix (a box's snapshots are under <prefix>/<node-name>/)"},
	{name: "snapshot-s3-region", usage: "bucket region"},
	{name: "snapshot-s3-credentials-file", usage: "0600 file with aws_access_key_id and aws_secret_access_key (default: $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY)"},
	{name: "snapshot-s3-ca-file", usage: "PEM CA bundle for the object store"},
	{name: "snapshot-s3-path-style", usage: "path-style bucket addressing"},
	{name: "snapshot-s3-insecure", usage: "allow a plain http:// endpoint"},
	{name: "snapshot-s3-keep-local", usage: "keep a local copy of snapshots uploaded to the object store"},
}

// objectStore opens the configured object store for node ("" to read only),
// or nil when none is configured.
func (s *nodeSettings) objectStore(node string) (*s3.Store, error) {
	cfg := s.flags.cfg.SnapshotS3
	if !cfg.Enabled() {
		return nil, nil
	}
	st, err := s3.New(cfg, node)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// needObjectStore is objectStore for a verb given an s3:// URL.
func (s *nodeSettings) needObjectStore(url string) (*s3.Store, error) {
	st, err := s.objectStore("")
	if err == nil && st == nil {
		err = fmt.Errorf("%s: no object store configured: give --snapshot-s3-endpoint (and the bucket's credentials), or set snapshot-s3-endpoint in the config file", url)
	}
	return st, err
}

// saveSnapshot runs a manual save into the snapshot dir, or, with an object
// store, streams it there (and keeps a local copy first with
// snapshot-s3-keep-local).
func saveSnapshot(ctx context.Context, s *nodeSettings, opts backup.SaveOptions, say func(string)) (backup.SaveResult, error) {
	cfg := s.flags.cfg
	if !cfg.SnapshotS3.Enabled() {
		return backup.Save(ctx, opts)
	}
	if err := cfg.SnapshotS3.Validate(); err != nil {
		return backup.SaveResult{}, err
	}
	// Fail on the store (credentials, bucket) before asking etcd.
	probe, err := s.objectStore("")
	if err != nil {
		return backup.SaveResult{}, err
	}
	if err := probe.Check(ctx); err != nil {
		return backup.SaveResult{}, err
	}
	open := func(h backup.Header) (*s3.Store, error) {
		st, err := s3.New(cfg.SnapshotS3, h.NodeName)
		if err == nil {
			st.Progress = say
		}
		return st, err
	}
	if cfg.SnapshotS3KeepLocal {
		res, err := backup.Save(ctx, opts)
		if err != nil {
			return res, err
		}
		st, err := open(res.Header)
		if err != nil {
			return res, err
		}
		url, err := st.Upload(ctx, res.Path)
		if err != nil {
			return res, fmt.Errorf("snapshot saved to %s, but its upload failed: %w", res.Path, err)
		}
		say("uploaded to " + url)
		return res, nil
	}
	opts.Sink = func(ctx context.Context, h backup.Header, headerLen int) (backup.Sink, error) {
		st, err := open(h)
		if err != nil {
			return nil, err
		}
		return st.Create(ctx, h, headerLen)
	}
	return backup.Save(ctx, opts)
}

// listRemote lists every snapshot under the object store's prefix (all
// boxes), as entries whose Path is the s3:// URL.
func listRemote(ctx context.Context, s *nodeSettings) ([]backup.Entry, error) {
	st, err := s.objectStore("")
	if st == nil || err != nil {
		return nil, err
	}
	remote, err := st.List(ctx, true)
	if err != nil {
		return nil, err
	}
	out := make([]backup.Entry, 0, len(remote))
	for _, e := range remote {
		out = append(out, backup.Entry{Path: e.URL, Header: e.Header, Size: e.Size, Err: e.Err})
	}
	return out, nil
}

// verifySnapshot verifies a snapshot file, or one in the object store
// (streamed, nothing written).
func verifySnapshot(ctx context.Context, s *nodeSettings, name string, key *backup.Key, trust backup.Trust) (backup.Header, int64, error) {
	if !s3.IsURL(name) {
		h, err := backup.Verify(name, key, trust)
		if err != nil {
			return h, 0, err
		}
		var size int64
		if fi, _ := os.Stat(name); fi != nil {
			size = fi.Size()
		}
		return h, size, nil
	}
	src, size, err := remoteSource(ctx, s, name, nil)
	if err != nil {
		return backup.Header{}, 0, err
	}
	rc, err := src.Open(ctx)
	if err != nil {
		return backup.Header{}, 0, err
	}
	defer rc.Close()
	h, err := backup.VerifyReader(rc, name, key, trust)
	return h, size, err
}

// remoteSource opens the snapshot at an s3:// URL.
func remoteSource(ctx context.Context, s *nodeSettings, url string, progress func(string)) (*backup.Source, int64, error) {
	st, err := s.needObjectStore(url)
	if err != nil {
		return nil, 0, err
	}
	st.Progress = progress
	return st.Source(ctx, url)
}

// removeSnapshot removes a local snapshot, or one in the object store.
func removeSnapshot(ctx context.Context, s *nodeSettings, name string) (string, error) {
	if !s3.IsURL(name) {
		return backup.Remove(s.snapDir, name)
	}
	st, err := s.needObjectStore(name)
	if err != nil {
		return "", err
	}
	return st.Remove(ctx, name)
}

// latestSnapshot is the newest snapshot in the object store, or without one
// in the snapshot dir.
func latestSnapshot(ctx context.Context, s *nodeSettings) (string, error) {
	st, err := s.objectStore("")
	if err != nil {
		return "", err
	}
	if st != nil {
		e, err := st.Latest(ctx)
		if err != nil {
			return "", err
		}
		return e.URL, nil
	}
	entries, err := backup.List(s.snapDir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Err == nil {
			return e.Path, nil
		}
	}
	return "", fmt.Errorf("no snapshot in %s (and no object store configured)", s.snapDir)
}
