package server

import (
	"os"
	"strconv"
	"testing"
)

// The score kubox hands the kubelet where it may not lower scores is one
// a process may always write: the one it already has.
func TestOwnOOMScoreAdjIsWritable(t *testing.T) {
	v, err := OwnOOMScoreAdj()
	if err != nil {
		t.Fatal(err)
	}
	if v < -1000 || v > 1000 {
		t.Fatalf("OwnOOMScoreAdj = %d, outside -1000..1000", v)
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(int(v))), 0); err != nil {
		t.Errorf("write own score %d back: %v", v, err)
	}
	if !HasCapSysResource() {
		// What the kubelet's default would meet here.
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-999"), 0); err == nil {
			t.Error("lowered the OOM score to -999 without CAP_SYS_RESOURCE")
		}
	}
}
