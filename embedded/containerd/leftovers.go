package containerd

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killLeftoverShims kills runc shims of this containerd (their command line
// names its socket) that outlived it, together with every process below
// them (the containers), and every process of kubox's runc binary (runcPath)
// left over. Shims outlive containerd by design; one is left when a sandbox
// was started while kubox was stopping (when the kubelet ran in-process,
// its pod workers did not all stop with its context). A `runc init` forked by a `runc create`
// while a sweep reads /proc is seen by no sweep's tree, and once its shim is
// killed it is reparented to init, below no shim, where it waits for a
// `runc start` forever: so the sweep repeats until one finds nothing, and
// runc processes count on their own. It returns how many processes it
// killed.
func killLeftoverShims(socket, runcPath string) int {
	killed := 0
	for pass := 0; pass < 5; pass++ {
		n := killLeftoverPass(socket, runcPath)
		if n == 0 {
			break
		}
		killed += n
		time.Sleep(50 * time.Millisecond)
	}
	return killed
}

// killLeftoverPass is one sweep of killLeftoverShims.
func killLeftoverPass(socket, runcPath string) int {
	children := map[int][]int{}
	var roots []int
	entries, _ := os.ReadDir("/proc")
	shim := []byte("-address\x00" + socket)
	runc := []byte(runcPath + "\x00")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					if f[0] == "Z" {
						continue // dead already, waiting for its reaper
					}
					ppid, _ := strconv.Atoi(f[1])
					children[ppid] = append(children[ppid], pid)
				}
			}
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && (bytes.Contains(cmdline, shim) || runcPath != "" && bytes.HasPrefix(cmdline, runc)) {
			roots = append(roots, pid)
		}
	}
	killed := 0
	seen := map[int]bool{}
	for _, root := range roots {
		tree := []int{root}
		for i := 0; i < len(tree); i++ {
			tree = append(tree, children[tree[i]]...)
		}
		// Containers first, so the shim does not restart or reap them.
		for i := len(tree) - 1; i >= 0; i-- {
			if !seen[tree[i]] && syscall.Kill(tree[i], syscall.SIGKILL) == nil {
				killed++
			}
			seen[tree[i]] = true
		}
	}
	return killed
}
