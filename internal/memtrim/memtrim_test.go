package memtrim

import (
	"os"
	"strings"
	"testing"
)

func TestParseSmaps(t *testing.T) {
	in := `00400000-01a00000 r-xp 00000000 fd:01 123 /usr/local/bin/kubox
Size:              22528 kB
Rss:                8192 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
c000000000-c004000000 rw-p 00000000 00:00 0 
Rss:                4096 kB
Anonymous:          4096 kB
7f0000000000-7f0000001000 r--p 00000000 fd:01 124 /opt/a b (deleted)
Rss:                   4 kB
`
	ms, err := parseSmaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("got %d mappings, want 3: %+v", len(ms), ms)
	}
	if m := ms[0]; m.start != 0x400000 || m.end != 0x1a00000 || m.perms != "r-xp" || m.path != "/usr/local/bin/kubox" || m.rss != 8192<<10 || m.anonymous != 0 {
		t.Errorf("text mapping: %+v", m)
	}
	if m := ms[1]; m.path != "" || m.anonymous != 4096<<10 {
		t.Errorf("anonymous mapping: %+v", m)
	}
	if m := ms[2]; m.path != "/opt/a b (deleted)" || m.rss != 4<<10 {
		t.Errorf("file mapping with spaces: %+v", m)
	}
	if _, err := parseSmaps(strings.NewReader("zz-yy r--p 0 0:0 0 /x\n")); err == nil {
		t.Error("a bad range parsed")
	}
}

// readOnlyExeRSS is what ExecutablePages may drop right now.
func readOnlyExeRSS(t *testing.T) int64 {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := parseSmaps(f)
	if err != nil {
		t.Fatal(err)
	}
	var rss int64
	for _, m := range ms {
		if m.path == exe && !strings.Contains(m.perms, "w") {
			rss += m.rss
		}
	}
	return rss
}

func TestExecutablePagesDropsThemAndTheProcessRunsOn(t *testing.T) {
	before := readOnlyExeRSS(t)
	if before == 0 {
		t.Skip("no resident read-only pages of the test binary to drop")
	}
	dropped, err := ExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	if dropped <= 0 {
		t.Fatalf("dropped %d bytes with %d resident", dropped, before)
	}
	// The code and data this needs fault back in; the rest stays out.
	after := readOnlyExeRSS(t)
	if after >= before {
		t.Errorf("read-only executable RSS %d after the trim, %d before", after, before)
	}
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Errorf("after the trim: %q", got)
	}
}
