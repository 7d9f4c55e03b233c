package backup

import (
	"archive/tar"
	"bytes"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"io/fs"
	"strings"
)

// readArchive reads the tar archive, enforcing the layout described in the
// package doc.
func readArchive(r io.Reader, prefix []byte, h Header, s sink) error {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	names := newPKINames()
	dbHash, wantDB := h.dbDigest()
	var (
		pkiFiles, parts int
		pkiSize, dbSize int64
		lastPKI         string
		trailerSeen     bool
		trailerEnd      int64 // archive offset just past the trailer's data
		wantTrailer     = []byte(hexSum(prefix) + "\n")
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if trailerSeen {
			return corruptf("entry %q after %s", hdr.Name, trailerName)
		}
		if err := checkEntry(hdr); err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(hdr.Name, pkiPrefix):
			name := hdr.Name[len(pkiPrefix):]
			switch {
			case parts > 0:
				return corruptf("PKI entry %q after the etcd db", hdr.Name)
			case pkiFiles > 0 && name <= lastPKI:
				return corruptf("PKI entry %q out of order", hdr.Name)
			case pkiFiles >= maxPKIFiles || hdr.Size > maxPKIFileSize:
				return corruptf("PKI entries exceed the limits")
			}
			if err := names.add(name); err != nil {
				return corruptf("%v", err)
			}
			mode := fs.FileMode(hdr.Mode).Perm()
			if err := feed(tr, hdr, nil, func(r io.Reader) error { return s.pkiFile(name, mode, r) }); err != nil {
				return err
			}
			pkiFiles, pkiSize, lastPKI = pkiFiles+1, pkiSize+hdr.Size, name
		case hdr.Name == dbPartName(parts):
			if hdr.Size == 0 {
				return corruptf("empty etcd db part %q", hdr.Name)
			}
			// Checked before reading, so a damaged size cannot make the
			// reader stream far more than the header announced.
			if hdr.Size > h.EtcdDBSize-dbSize {
				return mismatchf("etcd db is larger than the %d bytes in the header", h.EtcdDBSize)
			}
			if err := feed(tr, hdr, dbHash, s.dbPart); err != nil {
				return err
			}
			parts, dbSize = parts+1, dbSize+hdr.Size
		case hdr.Name == trailerName:
			if parts == 0 {
				return corruptf("no etcd db in the archive")
			}
			if hdr.Size != int64(len(wantTrailer)) {
				return corruptf("%s has the wrong length", trailerName)
			}
			got, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, wantTrailer) {
				return mismatchf("the plaintext header was altered (its digest differs from the one in the body)")
			}
			trailerSeen, trailerEnd = true, cr.n
		default:
			return corruptf("unexpected entry %q", hdr.Name)
		}
	}
	if !trailerSeen {
		return corruptf("archive ends before %s", trailerName)
	}
	// tar.Reader also reports io.EOF when the end-of-archive marker (two zero
	// blocks after the last entry's padding) is missing or cut short; insist on it.
	if want := roundUp(trailerEnd, 512) + 2*512; cr.n != want {
		return corruptf("archive end marker missing or damaged")
	}
	switch {
	case pkiFiles != h.PKIFiles || pkiSize != h.PKISize:
		return mismatchf("PKI has %d files and %d bytes, header says %d and %d", pkiFiles, pkiSize, h.PKIFiles, h.PKISize)
	case dbSize != h.EtcdDBSize:
		return mismatchf("etcd db has %d bytes, header says %d", dbSize, h.EtcdDBSize)
	case hex.EncodeToString(dbHash.Sum(nil)) != wantDB:
		return mismatchf("etcd db digest differs from the header's")
	}
	return nil
}

// checkEntry refuses anything Write does not produce: only regular files,
// and no sparse-file records, which would let a few bytes of archive expand
// into terabytes of zeros.
func checkEntry(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg {
		return corruptf("entry %q is not a regular file", hdr.Name)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return corruptf("entry %q is a sparse file", hdr.Name)
		}
	}
	return nil
}

// feed hands one entry to fn, drains what fn left, and checks the entry was
// complete. Read errors (a damaged stream) are returned as they are, for
// classify; errors of fn itself (a full disk in Extract) are wrapped in
// sinkError so that they are not mistaken for a damaged file.
func feed(tr *tar.Reader, hdr *tar.Header, tee hash.Hash, fn func(io.Reader) error) error {
	er := &entryReader{r: tr, tee: tee}
	if err := fn(er); err != nil {
		if er.err != nil {
			return er.err
		}
		return &sinkError{err}
	}
	if _, err := io.Copy(io.Discard, er); err != nil {
		return err
	}
	if er.n != hdr.Size {
		return corruptf("entry %q is cut short", hdr.Name)
	}
	return nil
}

// entryReader counts what is read of one tar entry, feeds it to an optional
// hash, and remembers read errors (see feed).
type entryReader struct {
	r   io.Reader
	tee hash.Hash
	n   int64
	err error
}

func (e *entryReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n > 0 && e.tee != nil {
		e.tee.Write(p[:n])
	}
	e.n += int64(n)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
