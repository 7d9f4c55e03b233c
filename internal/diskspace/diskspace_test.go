package diskspace

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFloor(t *testing.T) {
	for _, c := range []struct {
		total, want int64
	}{
		{1 * GiB, MinFloor},      // 2% is 20 MiB: etcd's WAL segment needs more
		{3200 * MiB, MinFloor},   // 2% is exactly 64 MiB
		{5 * GiB, 5 * GiB / 50},  // 102.4 MiB: 2%
		{100 * GiB, MaxFloor},    // 2 GiB would be 2%: capped
		{12800 * MiB, 256 * MiB}, // 2% is exactly the cap
		{0, MinFloor},            // unknown size: the least etcd needs
	} {
		if got := Floor(c.total); got != c.want {
			t.Errorf("Floor(%s) = %s, want %s", Human(c.total), Human(got), Human(c.want))
		}
	}
}

func TestCheckFloorSaysWhatAndWhere(t *testing.T) {
	st := &unix.Statfs_t{Bsize: 4096, Blocks: GiB / 4096, Bfree: 40 * MiB / 4096, Bavail: 40 * MiB / 4096}
	u := FromStatfs(st)
	u.Path, u.Device = "/var/lib/kubox", "/dev/loop7"
	err := u.CheckFloor()
	var low *LowError
	if !errors.As(err, &low) {
		t.Fatalf("CheckFloor = %v, want a LowError", err)
	}
	want := "data dir /var/lib/kubox: only 40.0 MiB free on /dev/loop7, below the 64.0 MiB floor: stopped; free space and kubox starts again"
	if err.Error() != want {
		t.Fatalf("got  %s\nwant %s", err, want)
	}
	st.Bavail, st.Bfree = MinFloor/4096, MinFloor/4096
	if err := FromStatfs(st).CheckFloor(); err != nil {
		t.Fatalf("exactly the floor free: %v", err)
	}
	// A start needs the WAL segment etcd gave back at its stop, too: with
	// 94 MiB free the running box would go on, a stopped one stays down.
	st.Bavail, st.Bfree = 94*MiB/4096, 94*MiB/4096
	u = FromStatfs(st)
	u.Path, u.Device = "/var/lib/kubox", "/dev/loop7"
	if err := u.CheckFloor(); err != nil {
		t.Fatalf("94 MiB free: %v", err)
	}
	err = u.CheckStart()
	want = "data dir /var/lib/kubox: only 94.0 MiB free on /dev/loop7, below the 128.0 MiB a start needs (the 64.0 MiB floor and etcd's 64.0 MiB WAL segment): not starting; free space and kubox starts again"
	if err == nil || err.Error() != want {
		t.Fatalf("CheckStart = %v\nwant %s", err, want)
	}
	st.Bavail, st.Bfree = 128*MiB/4096, 128*MiB/4096
	if err := FromStatfs(st).CheckStart(); err != nil {
		t.Fatalf("128 MiB free: %v", err)
	}
}

func TestPercentUsedIsDfs(t *testing.T) {
	// 100 blocks, 10 free for root, 5 of them for users: df says 95 used,
	// 5 available, 95%.
	u := FromStatfs(&unix.Statfs_t{Bsize: 1, Blocks: 100, Bfree: 10, Bavail: 5})
	if u.Used != 90 || u.Free != 5 {
		t.Fatalf("used %d free %d", u.Used, u.Free)
	}
	if p := u.PercentUsed(); p < 94.7 || p > 94.8 {
		t.Fatalf("PercentUsed = %.2f, want 94.74", p)
	}
}

func TestOfMeasuresTheNearestExistingParent(t *testing.T) {
	dir := t.TempDir()
	u, err := Of(filepath.Join(dir, "not", "yet"))
	if err != nil {
		t.Fatal(err)
	}
	if u.At != dir || u.Total <= 0 || u.Device == "" {
		t.Fatalf("Of = %+v", u)
	}
	same, err := SameFilesystem(dir, filepath.Join(dir, "x"))
	if err != nil || !same {
		t.Fatalf("SameFilesystem = %v, %v", same, err)
	}
	r, err := Reserve(dir, filepath.Join(dir, "snapshots"))
	if err != nil || r != u.Floor() {
		t.Fatalf("Reserve on the same filesystem = %d, %v; want the floor %d", r, err, u.Floor())
	}
	if r, err := Reserve(dir, "/proc"); err != nil || r != 0 {
		t.Fatalf("Reserve on another filesystem = %d, %v; want 0", r, err)
	}
	if !strings.HasPrefix(Human(3*MiB/2), "1.5 MiB") {
		t.Fatal(Human(3 * MiB / 2))
	}
}
