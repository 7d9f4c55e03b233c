package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubox/kubox/internal/diskspace"
)

// The estimate must hold for the worst case: a db that does not compress
// (Secrets encrypted at rest), encrypted, with PKI files.
func TestSpaceEstimateBoundsAnIncompressibleSnapshot(t *testing.T) {
	files, content, _ := testPKI(t)
	var pkiSize int64
	for _, c := range content {
		pkiSize += int64(len(c))
	}
	for _, size := range []int{1, 4<<20 - 1, 9<<20 + 12345} {
		db := randomBytes(size, uint64(size))
		e := writeSnapshot(t, t.TempDir(), db, WriteOptions{Header: testHeader(), Key: newKey(t), PKIFiles: files})
		if est := SpaceEstimate(int64(size), pkiSize); e.Size > est {
			t.Errorf("db of %d bytes: snapshot is %d bytes, above the estimate %d", size, e.Size, est)
		}
	}
}

func TestSpaceMargin(t *testing.T) {
	if m := SpaceMargin(10 * diskspace.MiB); m != 32*diskspace.MiB {
		t.Errorf("margin of a small snapshot = %s, want 32 MiB", diskspace.Human(m))
	}
	if m := SpaceMargin(2 * diskspace.GiB); m != 2*diskspace.GiB/10 {
		t.Errorf("margin of a 2 GiB snapshot = %s, want 10%%", diskspace.Human(m))
	}
}

// A save that would not leave room is refused before etcd streams
// anything, with one line naming the dir, the free space and the
// estimate, and leaves no file behind.
func TestSaveRefusesWithoutRoom(t *testing.T) {
	root := t.TempDir()
	url, _ := startEtcd(t, filepath.Join(root, "etcd"), "box")
	files, _, _ := testPKI(t)
	pkiDir := filepath.Dir(files["ca.crt"])
	dir := filepath.Join(root, "snapshots")
	u, err := diskspace.Of(root)
	if err != nil {
		t.Fatal(err)
	}
	opts := SaveOptions{Etcd: EtcdEndpoint{URL: url}, PKIDir: pkiDir, Dir: dir, Key: newKey(t), Signer: testSigner, NodeName: "box"}
	opts.KeepFree = u.Free // whatever the db, that cannot fit
	_, err = Save(context.Background(), opts)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Save = %v, want ErrNoSpace", err)
	}
	msg := err.Error()
	for _, want := range []string{dir, " free on " + u.Device, "the snapshot may take", "etcd db ", "must keep"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message is not one line: %q", msg)
	}
	if des, _ := os.ReadDir(dir); len(des) != 0 {
		t.Errorf("the refused save left %d files in %s", len(des), dir)
	}
	// With room, the same save works.
	opts.KeepFree = 0
	if _, err := Save(context.Background(), opts); err != nil {
		t.Fatalf("Save with room: %v", err)
	}
}

func TestIsTempNameMatchesOnlyWritesTempFiles(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		f, err := os.CreateTemp(dir, tmpPattern)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if !IsTempName(filepath.Base(f.Name())) {
			t.Errorf("IsTempName(%q) = false", filepath.Base(f.Name()))
		}
	}
	for _, name := range []string{"manual-box-20260101T000000Z.kbsnap", ".kbsnap-.tmp", ".kbsnap-12a.tmp", "kbsnap-1.tmp", ".kbsnap-1.tmp.x", ".ca.key.tmp-123"} {
		if IsTempName(name) {
			t.Errorf("IsTempName(%q) = true", name)
		}
	}
}
