package backup

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const marker = "KUBOX-PLAINTEXT-MARKER-configmap-value-5f1d"

// TestNoPlaintextOnDisk feeds Write a slow db stream full of a marker string
// (and a PKI file holding it) while a goroutine keeps reading every file in
// the snapshot dir, temp files included: no file may ever contain the marker.
func TestNoPlaintextOnDisk(t *testing.T) {
	var db bytes.Buffer
	for db.Len() < 12<<20 {
		db.WriteString(`{"kind":"ConfigMap","data":{"k":"` + marker + `"}}`)
		db.Write(randomBytes(200, uint64(db.Len())))
	}
	pkiDir := t.TempDir()
	pkiFile := filepath.Join(pkiDir, "ca.key")
	os.WriteFile(pkiFile, []byte("secret "+marker), 0o600)
	dir := filepath.Join(t.TempDir(), "snapshots")

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		found    atomic.Value
		midWrite atomic.Int64 // scans that saw a non-empty temp file
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if p, tmpSeen := scanForMarker(dir); p != "" {
				found.Store(p)
			} else if tmpSeen {
				midWrite.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	e, err := Write(context.Background(), dir, &slowReader{r: bytes.NewReader(db.Bytes())},
		WriteOptions{Header: testHeader(), PKIFiles: map[string]string{"ca.key": pkiFile}, Key: newKey(t)})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if p := found.Load(); p != nil {
		t.Fatalf("plaintext marker found on disk in %s during Write", p)
	}
	if p, _ := scanForMarker(dir); p != "" {
		t.Fatalf("plaintext marker found on disk in %s after Write", p)
	}
	data, _ := os.ReadFile(e.Path)
	if bytes.Contains(data, []byte(marker)) {
		t.Fatal("snapshot file contains the marker")
	}
	if midWrite.Load() == 0 {
		t.Fatal("the scanner never saw the write in progress; the test proves nothing")
	}
	t.Logf("%d scans saw the temp file mid-write", midWrite.Load())

	// Controls: the scanner finds a planted marker, and an unencrypted
	// snapshot of the same db does show it (zstd keeps it as a literal), so
	// the checks above would catch a write that skipped encryption.
	os.WriteFile(filepath.Join(dir, ".control.tmp"), []byte("x"+marker), 0o600)
	if p, _ := scanForMarker(dir); p == "" {
		t.Fatal("scanner misses a planted marker")
	}
	plain := writeSnapshot(t, t.TempDir(), db.Bytes()[:1<<20], WriteOptions{Header: testHeader(), InsecurePlaintext: true})
	if p, _ := scanForMarker(filepath.Dir(plain.Path)); p == "" {
		t.Fatal("the marker is not visible even in an unencrypted snapshot; the test proves nothing")
	}
}

// scanForMarker returns the first file in dir containing the marker, and
// whether it saw a non-empty temp file.
func scanForMarker(dir string) (string, bool) {
	des, _ := os.ReadDir(dir)
	tmpSeen := false
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			continue // renamed or removed meanwhile
		}
		if bytes.Contains(data, []byte(marker)) {
			return p, tmpSeen
		}
		if strings.HasSuffix(de.Name(), ".tmp") && len(data) > 0 {
			tmpSeen = true
		}
	}
	return "", tmpSeen
}

// slowReader hands out 64 KiB at a time with a pause, like a db streamed
// over gRPC.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(500 * time.Microsecond)
	return s.r.Read(p[:min(len(p), 64<<10)])
}
