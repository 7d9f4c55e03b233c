package containerd

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killLeftoverShims kills runc shims of this containerd (their command line
// names its socket) that outlived it, together with every process below
// them (the containers). Shims outlive containerd by design; one was left
// when a sandbox was started while kubox was stopping (when the kubelet ran
// in-process, its pod workers did not all stop with its context; the
// kubelet child now ends before containerd stops the pods). It returns how
// many processes it killed.
func killLeftoverShims(socket string) int {
	children := map[int][]int{}
	var shims []int
	entries, _ := os.ReadDir("/proc")
	needle := []byte("-address\x00" + socket)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					ppid, _ := strconv.Atoi(f[1])
					children[ppid] = append(children[ppid], pid)
				}
			}
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(cmdline, needle) {
			shims = append(shims, pid)
		}
	}
	killed := 0
	for _, shim := range shims {
		tree := []int{shim}
		for i := 0; i < len(tree); i++ {
			tree = append(tree, children[tree[i]]...)
		}
		// Containers first, so the shim does not restart or reap them.
		for i := len(tree) - 1; i >= 0; i-- {
			if syscall.Kill(tree[i], syscall.SIGKILL) == nil {
				killed++
			}
		}
	}
	return killed
}
