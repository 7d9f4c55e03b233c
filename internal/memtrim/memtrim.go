// Package memtrim gives back the pages of kubox's own executable that only
// its start used. kubox is one large binary (etcd, the apiserver, the
// controllers, the kubelet, kubectl, the embedded runtime assets); a start
// touches much of its code and read-only data once (package init, the
// assets written to disk, the API's OpenAPI and schemes), and those pages
// then stay mapped, counted in the process's RSS and PSS, and are harder
// for the kernel to reclaim than unmapped page cache. Dropping them from
// the process's page tables costs one minor fault per page still in use,
// which comes back from the page cache.
package memtrim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Loop calls ExecutablePages after first and then every period until ctx
// ends, and hands each result to report. The first trim comes once the
// start's one-off work is done; the later ones drop what rare work (a
// certificate renewal, a snapshot) touched since.
func Loop(ctx context.Context, first, period time.Duration, report func(dropped int64, err error)) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		report(ExecutablePages())
		t.Reset(period)
	}
}

// ExecutablePages drops every read-only mapping of this process's own
// executable (code and read-only data) from its page tables and returns
// how many resident bytes that unmapped. Writable mappings (data, bss) and
// any mapping holding a private copy of a page are left alone: for those
// MADV_DONTNEED would lose what was written.
func ExecutablePages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("read own mappings: %w", err)
	}
	ms, err := parseSmaps(bytes.NewReader(smaps))
	if err != nil {
		return 0, fmt.Errorf("read own mappings: %w", err)
	}
	var dropped int64
	for _, m := range ms {
		if m.path != exe || strings.Contains(m.perms, "w") || m.anonymous > 0 || m.rss == 0 {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return dropped, fmt.Errorf("madvise %x-%x of %s: %w", m.start, m.end, exe, errno)
		}
		dropped += m.rss
	}
	return dropped, nil
}

// mapping is one entry of /proc/PID/smaps.
type mapping struct {
	start, end     uintptr
	perms, path    string
	rss, anonymous int64 // bytes
}

// parseSmaps reads the mappings of a /proc/PID/smaps file.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header
			if len(fields) < 5 {
				return nil, fmt.Errorf("mapping header %q", sc.Text())
			}
			lo, hi, ok := strings.Cut(fields[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil || end < start {
				return nil, fmt.Errorf("mapping range %q", fields[0])
			}
			m := mapping{start: uintptr(start), end: uintptr(end), perms: fields[1]}
			if len(fields) >= 6 {
				m.path = strings.Join(fields[5:], " ")
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 || len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue // VmFlags and the like
		}
		switch fields[0] {
		case "Rss:":
			out[len(out)-1].rss = kb << 10
		case "Anonymous:":
			out[len(out)-1].anonymous = kb << 10
		}
	}
	return out, sc.Err()
}
