package s3

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kubox/kubox/backup"
)

// Create starts the upload of a new snapshot with header h (a
// backup.OpenSink): the snapshot streams into a multipart upload as it is
// produced, and becomes an object only when Commit completes the upload.
// An upload cut short (kubox killed, the object store gone) leaves no
// object, only an incomplete upload that AbortStale removes later.
//
// The header, known only at the end, is the start of the object, and S3
// objects cannot be patched; but parts of a multipart upload may be sent
// in any order. So the first PartSize bytes of the body are held back and
// sent at Commit as part 1, after the header; parts 2, 3, ... go as they
// fill. Memory: two parts.
func (s *Store) Create(ctx context.Context, h backup.Header, headerLen int) (backup.Sink, error) {
	if _, err := s.AbortStale(ctx); err != nil {
		return nil, err
	}
	key, err := s.freeKey(ctx, backup.ObjectName(h))
	if err != nil {
		return nil, err
	}
	ps := max(int(s.PartSize), minPartSize)
	return &upload{s: s, ctx: ctx, key: key, partSize: ps, headerLen: headerLen,
		first: make([]byte, 0, ps), buf: make([]byte, 0, ps), next: 2, begin: time.Now()}, nil
}

type upload struct {
	s         *Store
	ctx       context.Context
	key       string
	partSize  int
	headerLen int

	first, buf []byte // body bytes held for part 1, and the part filling now
	id         string // multipart upload ID, once a part had to go
	parts      []minio.CompletePart
	next       int   // number of the next part
	sent       int64 // bytes stored so far
	begin      time.Time
	lastReport time.Time
}

func (u *upload) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(u.first) < cap(u.first) {
			k := min(len(p), cap(u.first)-len(u.first))
			u.first, p = append(u.first, p[:k]...), p[k:]
			continue
		}
		k := min(len(p), cap(u.buf)-len(u.buf))
		u.buf, p = append(u.buf, p[:k]...), p[k:]
		if len(u.buf) == cap(u.buf) {
			if err := u.sendPart(u.buf); err != nil {
				return n - len(p), err
			}
			u.buf = u.buf[:0]
		}
	}
	return n, nil
}

// sendPart uploads b as the next part, starting the multipart upload first
// if need be.
func (u *upload) sendPart(b []byte) error {
	if u.id == "" {
		id, err := u.s.core.NewMultipartUpload(u.ctx, u.s.cfg.Bucket, u.key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
		if err != nil {
			return u.s.describe("start the upload of "+u.s.URL(u.key), err)
		}
		u.id = id
	}
	return u.put(u.next, true, b)
}

func (u *upload) put(num int, advance bool, bufs ...[]byte) error {
	r := concat(bufs...)
	p, err := u.s.core.PutObjectPart(u.ctx, u.s.cfg.Bucket, u.key, u.id, num, r, r.Size(), minio.PutObjectPartOptions{})
	if err != nil {
		return u.s.describe(fmt.Sprintf("upload part %d of %s", num, u.s.URL(u.key)), err)
	}
	u.parts = append(u.parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
	if advance {
		u.next++
	}
	u.sent += r.Size()
	u.report(false)
	return nil
}

func (u *upload) report(final bool) {
	if u.s.Progress == nil || (!final && time.Since(u.lastReport) < time.Second) {
		return
	}
	u.lastReport = time.Now()
	d := time.Since(u.begin)
	u.s.Progress(fmt.Sprintf("uploaded %s to %s in %s (%s/s)", backup.HumanBytes(u.sent), u.s.URL(u.key),
		d.Round(time.Millisecond), backup.HumanBytes(int64(backup.Rate(u.sent, d)))))
}

// Commit sends what is held back and completes the upload: only now does
// the object exist.
func (u *upload) Commit(ctx context.Context, header, trailer []byte) (backup.Entry, error) {
	if len(header) != u.headerLen {
		return backup.Entry{}, fmt.Errorf("upload %s: header of %d bytes, %d announced", u.s.URL(u.key), len(header), u.headerLen)
	}
	u.ctx = ctx
	if u.id == "" {
		// Small enough for one PUT, which is atomic too.
		all := concat(header, u.first, u.buf, trailer)
		size := all.Size()
		if _, err := u.s.core.PutObject(ctx, u.s.cfg.Bucket, u.key, all, size, "", "", minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
			return backup.Entry{}, u.s.describe("upload "+u.s.URL(u.key), err)
		}
		u.sent = size
		u.report(true)
		return backup.Entry{Path: u.s.URL(u.key), Size: size}, nil
	}
	// The last part may be short; every other part is a full one.
	if err := u.put(u.next, true, u.buf, trailer); err != nil {
		return backup.Entry{}, err
	}
	if err := u.put(1, false, header, u.first); err != nil {
		return backup.Entry{}, err
	}
	parts := make([]minio.CompletePart, len(u.parts))
	for _, p := range u.parts {
		parts[p.PartNumber-1] = p
	}
	if _, err := u.s.core.CompleteMultipartUpload(ctx, u.s.cfg.Bucket, u.key, u.id, parts, minio.PutObjectOptions{}); err != nil {
		return backup.Entry{}, u.s.describe("complete the upload of "+u.s.URL(u.key), err)
	}
	u.id = ""
	u.report(true)
	return backup.Entry{Path: u.s.URL(u.key), Size: u.sent}, nil
}

// Abort drops the incomplete upload; if the object store cannot be reached
// now, AbortStale removes it later.
func (u *upload) Abort() {
	if u.id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 10*time.Second)
	defer cancel()
	if err := u.s.core.AbortMultipartUpload(ctx, u.s.cfg.Bucket, u.key, u.id); err != nil {
		u.s.mu.Lock()
		u.s.failed = append(u.s.failed, pendingUpload{key: u.key, id: u.id})
		u.s.mu.Unlock()
	}
	u.id = ""
}

// concat reads the buffers one after the other without copying them; it
// can seek, so that minio-go can retry a request.
func concat(bufs ...[]byte) *io.SectionReader {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return io.NewSectionReader(multiReaderAt(bufs), 0, n)
}

type multiReaderAt [][]byte

func (m multiReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for _, b := range m {
		if off >= int64(len(b)) {
			off -= int64(len(b))
			continue
		}
		k := copy(p[n:], b[off:])
		n, off = n+k, 0
		if n == len(p) {
			return n, nil
		}
	}
	return n, io.EOF
}
