package airgap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzReader feeds arbitrary bytes to the bundle reader: it must never
// panic, and whatever it refuses must be refused with one of its errors on
// one line. The seed corpus (testdata/fuzz/FuzzReader) holds a valid bundle,
// truncations and hand-broken ones; `go test -fuzz FuzzReader ./airgap`
// explores from there.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan error, 1)
		go func() {
			r, err := NewReader(bytes.NewReader(data))
			if err == nil {
				err = r.Verify()
				r.Close()
			}
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("reader still busy after 5s")
		}
		if err == nil {
			return
		}
		known := errors.Is(err, ErrNotBundle) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrDigestMismatch) ||
			errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrInvalid)
		if !known {
			t.Fatalf("refused with an unclassified error: %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error spans lines: %q", err)
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpus when
// KUBOX_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("KUBOX_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set KUBOX_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzReader")
	}
	good := writeBundle(t, testImages(t)[:1], nil)
	ents := untar(t, good)
	bi := blobIndex(ents)
	bad := func(f func([]entry) []entry) []byte {
		c := append([]entry(nil), ents...)
		return retar(t, f(c))
	}
	seeds := map[string][]byte{
		"valid":     good,
		"truncated": good[:len(good)*2/3],
		"dotdot":    bad(func(e []entry) []entry { e[bi].name = "blobs/../../x"; return e }),
		"absolute":  bad(func(e []entry) []entry { e[bi].name = "/" + e[bi].name; return e }),
		"mismatch": bad(func(e []entry) []entry {
			d := append([]byte(nil), e[bi].data...)
			d[10] ^= 1
			e[bi].data = d
			return e
		}),
		"notbundle": []byte("PK\x03\x04 this is a zip file"),
	}
	// A bundle with an application, and one whose manifest entry climbs out.
	var app bytes.Buffer
	if _, err := Write(t.Context(), &app, testImages(t)[:1], WriteOptions{Created: time.Unix(1700000000, 0).UTC(),
		App: "shop", Manifests: []AppSource{{Name: "cm.json", Data: []byte(cmJSON)}}}); err != nil {
		t.Fatal(err)
	}
	seeds["valid-app"] = app.Bytes()
	appEnts := untar(t, app.Bytes())
	for i := range appEnts {
		if appEnts[i].name == AppPrefix+"cm.json" {
			appEnts[i].name = AppPrefix + "../cm.json"
		}
	}
	seeds["app-dotdot"] = retar(t, appEnts)
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
