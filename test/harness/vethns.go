package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Netns is a network namespace a test made, joined to the host by a veth
// pair: a "box" with an address of its own. Processes run in it with
// nsenter --net only, so they keep the host's mounts and cgroups (ip netns
// exec would remount /sys and hide the cgroup hierarchy from the kubelet).
type Netns struct {
	Name     string // under /run/netns
	HostLink string // host end of the veth pair
	HostIP   string // address of the host end
	IP       string // address inside the namespace; its default route goes via HostIP
}

// NewNetns creates network namespace name with a veth pair on 10.213.<idx>.0/24
// (host end .1, namespace end .2 with a default route via the host), and
// registers its removal, killing whatever still runs in it, for the end of
// the test. Register it before the nodes that use it, so it goes after them.
func NewNetns(tb testing.TB, name string, idx int) *Netns {
	tb.Helper()
	ns := &Netns{
		Name:     name,
		HostLink: "e2e" + strconv.Itoa(idx) + "h",
		HostIP:   fmt.Sprintf("10.213.%d.1", idx),
		IP:       fmt.Sprintf("10.213.%d.2", idx),
	}
	tb.Cleanup(func() {
		for _, e := range ns.remove() {
			tb.Errorf("cleanup netns %s: %v", name, e)
		}
	})
	inNS := func(args ...string) []string { return append([]string{"ip", "-n", name}, args...) }
	for _, argv := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", ns.HostLink, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"ip", "addr", "add", ns.HostIP + "/24", "dev", ns.HostLink},
		{"ip", "link", "set", ns.HostLink, "up"},
		inNS("link", "set", "lo", "up"),
		inNS("addr", "add", ns.IP+"/24", "dev", "eth0"),
		inNS("link", "set", "eth0", "up"),
		inNS("route", "add", "default", "via", ns.HostIP),
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			tb.Fatalf("create netns %s: %s: %v: %s", name, strings.Join(argv, " "), err, out)
		}
	}
	return ns
}

// Path is the namespace's file, for nsenter --net.
func (ns *Netns) Path() string { return "/run/netns/" + ns.Name }

// Command returns argv run inside the namespace; with a hostname, also in a
// UTS namespace of its own with that hostname (a box with another name).
func (ns *Netns) Command(hostname string, argv ...string) []string {
	cmd := []string{"nsenter", "--net=" + ns.Path(), "--"}
	if hostname != "" {
		cmd = append(cmd, "unshare", "--uts", "--", "sh", "-c", `hostname "$0" && exec "$@"`, hostname)
	}
	return append(cmd, argv...)
}

// remove kills every process left in the namespace, then deletes it and
// the host end of the veth pair (gone with the namespace, normally).
func (ns *Netns) remove() []error {
	var errs []error
	for range 20 {
		pids := netnsPids(ns.Name)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			killPid(pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(ns.Path()); err == nil {
		if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns delete %s: %v: %s", ns.Name, err, out))
		}
	}
	if _, err := os.Stat("/sys/class/net/" + ns.HostLink); err == nil {
		// The kernel removes the host end with the namespace, a moment
		// later: gone meanwhile is fine.
		if out, err := exec.Command("ip", "link", "delete", ns.HostLink).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
			errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", ns.HostLink, err, out))
		}
	}
	return errs
}
