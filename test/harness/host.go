package harness

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubox/kubox/internal/mounts"
)

// Host is what a test run may change on the host, recorded before it starts.
type Host struct {
	sysctls   map[string]string
	existed   map[string]bool // host paths the kubelet creates
	nftTables map[string]bool
	links     map[string]bool
	chains    map[string]bool // "iptables/table/chain"
}

var (
	// Changed by the kubelet, kubox's pod network and the service proxy.
	watchedSysctls = []string{"net/ipv4/ip_forward", "vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops",
		"net/bridge/bridge-nf-call-iptables"}
	// Created by the kubelet outside its root dir.
	watchedPaths = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers"}
	// The kubelet's iptables canaries and the service proxy's chains (the
	// iptables and ipvs modes): every KUBE-* chain; kubox's pod masquerade
	// where nft is missing: KUBOX-*.
	watchedChainPrefixes = []string{"KUBE-", "KUBOX-"}
	// Pod cgroups at the root, and under the per-box roots of tests that run
	// several kubelets (CgroupRootPrefix).
	cgroupNames = []string{"kubepods", "kubepods.slice", CgroupRootPrefix + "*"}
)

// CgroupRootPrefix starts the name of every per-box cgroup root a test
// gives kubox (--kubelet-cgroup-root /<prefix><box>); cleanup removes them.
const CgroupRootPrefix = "kubox-e2e-"

// SnapshotHost records the host state that Restore puts back.
func SnapshotHost() *Host {
	h := &Host{sysctls: map[string]string{}, existed: map[string]bool{}}
	for _, s := range watchedSysctls {
		if v, err := os.ReadFile("/proc/sys/" + s); err == nil {
			h.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range watchedPaths {
		_, err := os.Stat(p)
		h.existed[p] = err == nil
	}
	h.nftTables = nftTables()
	h.links = links()
	h.chains = iptablesChains()
	return h
}

// Restore removes what the node left and puts back what it changed. It
// returns what it could not undo.
func (h *Host) Restore(n *Node) []error {
	var errs []error
	killCgroupProcs()
	for _, pid := range n.Processes() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(100 * time.Millisecond)
	for _, dir := range []string{n.Root, "/var/lib/kubelet"} {
		if _, err := mounts.UnmountUnder(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	for t := range nftTables() {
		if !h.nftTables[t] {
			if out, err := exec.Command("nft", "delete", "table", t).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("nft delete table %s: %v: %s", t, err, out))
			}
		}
	}
	for l := range links() {
		if !h.links[l] {
			if out, err := exec.Command("ip", "link", "delete", l).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find")) {
				errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", l, err, out))
			}
		}
	}
	// New chains may jump to each other: unlink and flush them all first.
	var newChains [][]string
	for c := range iptablesChains() {
		if !h.chains[c] {
			parts := strings.Split(c, "/")
			newChains = append(newChains, parts)
			removeJumps(parts[0], parts[1], parts[2])
			_ = exec.Command(parts[0], "-w", "-t", parts[1], "-F", parts[2]).Run()
		}
	}
	for _, parts := range newChains {
		if out, err := exec.Command(parts[0], "-w", "-t", parts[1], "-X", parts[2]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s -X %s: %v: %s", parts[0], parts[1], parts[2], err, out))
		}
	}
	for _, p := range watchedPaths {
		if !h.existed[p] {
			if _, err := mounts.UnmountUnder(p); err != nil {
				errs = append(errs, err)
			}
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for s, v := range h.sysctls {
		if cur, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile("/proc/sys/"+s, []byte(v+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore sysctl %s: %w", s, err))
			}
		}
	}
	return errs
}

// ProcessesMentioning lists live processes whose command line contains any
// of the given strings.
func ProcessesMentioning(needles ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && bytes.Contains(stat, []byte(") Z ")) {
			continue // a zombie waiting for its reaper is not running
		}
		for _, n := range needles {
			if n != "" && bytes.Contains(cmdline, []byte(n)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// cgroupDirs lists the kubelet's pod cgroups in every hierarchy, deepest first.
func cgroupDirs() []string {
	var dirs []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		for _, name := range cgroupNames {
			tops, _ := filepath.Glob(filepath.Join(root, name))
			for _, top := range tops {
				if _, err := os.Stat(filepath.Join(top, "cgroup.procs")); err != nil {
					continue
				}
				_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.IsDir() {
						dirs = append(dirs, p)
					}
					return nil
				})
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// PodCgroupsExist tells whether the kubelet's pod cgroups are present.
func PodCgroupsExist() bool { return len(cgroupDirs()) > 0 }

func killCgroupProcs() {
	for _, d := range cgroupDirs() {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func removeCgroups() error {
	var last error
	for try := 0; try < 20; try++ {
		last = nil
		for _, d := range cgroupDirs() {
			if err := syscall.Rmdir(d); err != nil {
				last = fmt.Errorf("remove cgroup %s: %w", d, err)
			}
		}
		if last == nil {
			return nil
		}
		killCgroupProcs()
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func nftTables() map[string]bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	m := map[string]bool{}
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "table" {
			m[f[1]+" "+f[2]] = true
		}
	}
	return m
}

// links lists network links kubox may create: its bridge and pod veths.
func links() map[string]bool {
	m := map[string]bool{}
	entries, _ := os.ReadDir("/sys/class/net")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "kubox") || strings.HasPrefix(e.Name(), "veth") {
			m[e.Name()] = true
		}
	}
	return m
}

// removeJumps deletes the rules of table that jump to chain, so the chain
// itself can be removed.
func removeJumps(bin, table, chain string) {
	out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == "-A" && strings.HasSuffix(line, "-j "+chain) {
			_ = exec.Command(bin, append([]string{"-w", "-t", table, "-D"}, f[1:]...)...).Run()
		}
	}
}

func iptablesChains() map[string]bool {
	m := map[string]bool{}
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) != 2 || f[0] != "-N" {
					continue
				}
				for _, prefix := range watchedChainPrefixes {
					if strings.HasPrefix(f[1], prefix) {
						m[bin+"/"+table+"/"+f[1]] = true
					}
				}
			}
		}
	}
	return m
}
