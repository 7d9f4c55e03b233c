package etcd

import "testing"

const mib = 1 << 20

func TestDefragPays(t *testing.T) {
	quota := int64(2048 * mib)
	for _, tc := range []struct {
		name        string
		size, inUse int64
		want        bool
	}{
		{"fresh database", 4 * mib, 3 * mib, false},
		{"half free but small", 40 * mib, 16 * mib, false},
		{"half free and 32 MiB", 64 * mib, 32 * mib, true},
		{"much free but under half", 400 * mib, 250 * mib, false},
		{"near the quota, a tenth free", 1700 * mib, 1500 * mib, true},
		{"near the quota, little free", 1700 * mib, 1650 * mib, false},
		{"empty", 0, 0, false},
	} {
		got, reason := DefragPays(Usage{Size: tc.size, InUse: tc.inUse, Quota: quota})
		if got != tc.want {
			t.Errorf("%s: DefragPays(%d MiB, %d MiB in use) = %v (%s), want %v", tc.name, tc.size/mib, tc.inUse/mib, got, reason, tc.want)
		}
		if got && reason == "" {
			t.Errorf("%s: no reason given", tc.name)
		}
	}
}

func TestCanDisarm(t *testing.T) {
	quota := int64(32 * mib)
	for _, tc := range []struct {
		size int64
		want bool
	}{
		{8 * mib, true},
		{25 * mib, true},
		{quota*8/10 + 1, false}, // just at the margin: the next writes would raise it again
		{31 * mib, false},
		{40 * mib, false},
	} {
		if got := CanDisarm(Usage{Size: tc.size, InUse: tc.size, Quota: quota}); got != tc.want {
			t.Errorf("CanDisarm(%d of %d bytes) = %v, want %v", tc.size, quota, got, tc.want)
		}
	}
	if CanDisarm(Usage{Size: 1, Quota: 0}) {
		t.Error("CanDisarm without a known quota")
	}
}

func TestUsageFragmentation(t *testing.T) {
	u := Usage{Size: 100 * mib, InUse: 25 * mib, Quota: 2048 * mib}
	if f := u.Fragmentation(); f != 0.75 {
		t.Errorf("Fragmentation = %v, want 0.75", f)
	}
	if got, want := u.String(), "100 MiB (25 MiB in use, 75% free) of a 2.0 GiB quota"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if (Usage{Size: 10, InUse: 20}).Free() != 0 {
		t.Error("Free is negative")
	}
}
