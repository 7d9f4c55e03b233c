package backup

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/zeebo/blake3"
)

// writeDB copies the etcd stream into numbered parts of dbPartSize and
// returns its size and hex BLAKE3-256. Reading the next part (waiting on etcd),
// hashing and compressing run at the same time, so a snapshot costs about
// the slowest of the three rather than their sum; memory stays at two parts.
func writeDB(ctx context.Context, tw *tar.Writer, db io.Reader, mtime time.Time) (int64, string, error) {
	parts, stop := readParts(db)
	defer stop()
	hash := blake3.New()
	var total int64
	for part := 0; ; part++ {
		var p dbPart
		select {
		case p = <-parts:
		case <-ctx.Done():
			return 0, "", ctx.Err()
		}
		if len(p.data) > 0 {
			hashed := make(chan struct{})
			go func() {
				hash.Write(p.data)
				close(hashed)
			}()
			err := writeEntry(tw, dbPartName(part), 0o600, mtime, p.data)
			<-hashed
			if err != nil {
				return 0, "", err
			}
			total += int64(len(p.data))
		}
		p.release()
		if errors.Is(p.err, io.EOF) || errors.Is(p.err, io.ErrUnexpectedEOF) {
			break
		}
		if p.err != nil {
			return 0, "", fmt.Errorf("read etcd snapshot stream: %w", p.err)
		}
	}
	if total == 0 {
		return 0, "", errors.New("etcd snapshot stream is empty")
	}
	return total, hex.EncodeToString(hash.Sum(nil)), nil
}

// dbPart is one part of the etcd stream and the error that ended it, if any.
type dbPart struct {
	data    []byte
	err     error
	release func() // gives the buffer back to the reader
}

// readParts reads db in parts of dbPartSize on its own goroutine, with two
// buffers. stop ends the goroutine and waits for it, so db is not read after
// Write returns (a db.Read in progress is waited for).
func readParts(db io.Reader) (<-chan dbPart, func()) {
	parts := make(chan dbPart)
	free := make(chan []byte, 2)
	free <- make([]byte, dbPartSize)
	free <- make([]byte, dbPartSize)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(db, buf)
			p := dbPart{data: buf[:n], err: err, release: func() { free <- buf }}
			select {
			case parts <- p:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return parts, func() {
		close(done)
		wg.Wait()
	}
}

func dbPartName(part int) string { return fmt.Sprintf("%s%08d", dbPrefix, part) }
