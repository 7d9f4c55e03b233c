package hostcheck

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeHost writes a fake /proc and /sys tree and returns a Config over it
// whose live probes are replaced by fakes.
func fakeHost(t *testing.T, files map[string]string) Config {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Config{
		ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"),
		ModulesDir: filepath.Join(root, "modules"),
		DataDir:    "/nonexistent/kubox",
		LookPath:   func(string) (string, error) { return "/usr/sbin/nft", nil },
		ProbeKernel: func(string) map[string]error {
			return map[string]error{"bridge": nil, "veth": nil, "vxlan": nil, "nf_tables": nil}
		},
		Listen: func(string, string) (net.Listener, error) { return nopListener{}, nil },
		Statfs: func(_ string, st *unix.Statfs_t) error {
			st.Type, st.Bsize, st.Bavail = 0xEF53, 4096, 50*GiB/4096
			return nil
		},
		Adjtimex:       func(tx *unix.Timex) (int, error) { return unix.TIME_OK, nil },
		CapSysResource: func() bool { return true },
	}
}

type nopListener struct{ net.Listener }

func (nopListener) Close() error { return nil }

// This machine's shape: hybrid cgroups, no ip_vs.
var hybrid = map[string]string{
	"proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
	"proc/self/mountinfo": `25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
36 33 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
37 33 0:32 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
38 33 0:33 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
39 33 0:34 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 33 0:35 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
`,
	"sys/fs/cgroup/unified/cgroup.controllers": "\n",
	"proc/filesystems":                         "nodev\tcgroup\nnodev\tcgroup2\nnodev\toverlay\n\text4\n",
	"proc/meminfo":                             "MemTotal:       24684096 kB\nMemAvailable:   24121576 kB\n",
	"proc/swaps":                               "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
}

func byName(rs []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

func TestHybridHostWithoutIPVS(t *testing.T) {
	cfg := fakeHost(t, hybrid)
	cfg.Ports = []Port{{Port: 6443, What: "apiserver", Flag: "--https-port"}}
	rs := byName(Run(cfg))
	want := map[string]Status{"kernel": OK, "cgroups": Warn, "overlayfs": OK, "nftables": OK, "ip_vs": OK,
		"proxy mode": OK, "bridge": OK, "veth": OK, "vxlan": OK, "port 6443": OK, "data dir": OK, "memory": OK,
		"clock sync": OK, "CAP_SYS_RESOURCE": OK, "swap": OK}
	for name, st := range want {
		if rs[name].Status != st {
			t.Errorf("%s: %s (%s), want %s", name, rs[name].Status, rs[name].Message, st)
		}
	}
	if m := rs["cgroups"].Message; !strings.HasPrefix(m, "hybrid") || !strings.Contains(m, "cpuset memory pids") {
		t.Errorf("cgroups message %q", m)
	}
	if rs["proxy mode"].Message != "nftables: kernel has no ip_vs" || !strings.HasPrefix(rs["ip_vs"].Message, "not present") {
		t.Errorf("proxy %q, ip_vs %q", rs["proxy mode"].Message, rs["ip_vs"].Message)
	}
	if Failed(Run(cfg)) {
		t.Error("Failed on a good host")
	}
}

func TestCgroupV2AndIPVS(t *testing.T) {
	files := map[string]string{}
	for k, v := range hybrid {
		files[k] = v
	}
	files["proc/self/mountinfo"] = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
	files["sys/fs/cgroup/cgroup.controllers"] = "cpuset cpu io memory hugetlb pids rdma misc\n"
	files["proc/net/ip_vs"] = "IP Virtual Server version 1.2.1\n"
	files["sys/module/ip_vs_rr/refcnt"] = "1\n"
	rs := byName(Run(fakeHost(t, files)))
	if r := rs["cgroups"]; r.Status != OK || !strings.HasPrefix(r.Message, "v2 at /sys/fs/cgroup") {
		t.Errorf("cgroups: %+v", r)
	}
	if r := rs["proxy mode"]; r.Status != OK || r.Message != "ipvs: /proc/net/ip_vs present, with the rr scheduler" {
		t.Errorf("proxy mode: %+v", r)
	}
	// The same host with a scheduler it lacks: auto falls back to nftables
	// and says why, forcing ipvs fails with what to do.
	cfg := fakeHost(t, files)
	cfg.IPVSScheduler = "sh"
	if r := byName(Run(cfg))["proxy mode"]; r.Status != OK || !strings.HasPrefix(r.Message, "nftables: kernel has ip_vs but not its sh scheduler") {
		t.Errorf("proxy mode with sh: %+v", r)
	}
	cfg.ProxyMode = "ipvs"
	if r := byName(Run(cfg))["proxy mode"]; r.Status != Fail || !strings.Contains(r.Message, "modprobe ip_vs ip_vs_sh") {
		t.Errorf("forced ipvs with sh: %+v", r)
	}
}

func TestForcedIPVSWithoutIPVS(t *testing.T) {
	cfg := fakeHost(t, hybrid)
	cfg.ProxyMode = "ipvs"
	r := byName(Run(cfg))["proxy mode"]
	if r.Status != Fail || !strings.HasPrefix(r.Message, "proxy mode ipvs: kernel has no ip_vs;") || r.Fix == "" {
		t.Errorf("forced ipvs on a host without ip_vs: %+v", r)
	}
	cfg.ProxyMode = "bogus"
	if r := byName(Run(cfg))["proxy mode"]; r.Status != Fail || !strings.Contains(r.Message, "--proxy-mode") {
		t.Errorf("bad proxy-mode: %+v", r)
	}
}

func TestFailures(t *testing.T) {
	files := map[string]string{}
	for k, v := range hybrid {
		files[k] = v
	}
	files["proc/sys/kernel/osrelease"] = "4.9.0-8-amd64\n"
	files["proc/self/mountinfo"] = "36 33 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
	files["proc/filesystems"] = "nodev\tcgroup\n\text4\n"
	files["proc/meminfo"] = "MemTotal:  524288 kB\nMemAvailable: 100000 kB\n"
	files["proc/swaps"] = "Filename Type Size Used Priority\n/swapfile file 1048572 0 -2\n"
	cfg := fakeHost(t, files)
	cfg.LookPath = func(string) (string, error) { return "", errors.New("not found") }
	cfg.ProbeKernel = func(string) map[string]error {
		return map[string]error{"bridge": nil, "veth": errors.New("operation not supported"), "vxlan": errors.New("x")}
	}
	cfg.Ports = []Port{{Port: 2379, What: "etcd client", Flag: "--etcd-client-port"}}
	cfg.Listen = func(string, string) (net.Listener, error) { return nil, unix.EADDRINUSE }
	cfg.Statfs = func(_ string, st *unix.Statfs_t) error {
		st.Type, st.Bsize, st.Bavail = 0x01021994, 4096, 100
		return nil
	}
	cfg.Adjtimex = func(tx *unix.Timex) (int, error) { tx.Status = unix.STA_UNSYNC; return unix.TIME_ERROR, nil }
	cfg.CapSysResource = func() bool { return false }
	rs := Run(cfg)
	m := byName(rs)
	want := map[string]Status{"kernel": Fail, "cgroups": Fail, "overlayfs": Fail, "nftables": Warn, "ip_vs": OK,
		"proxy mode": Fail, "bridge": OK, "veth": Fail, "vxlan": Warn, "port 2379": Fail, "data dir": Fail,
		"memory": Fail, "clock sync": Warn, "CAP_SYS_RESOURCE": Warn, "swap": Warn}
	for name, st := range want {
		if m[name].Status != st {
			t.Errorf("%s: %s (%s), want %s", name, m[name].Status, m[name].Message, st)
		}
		if m[name].Status != OK && m[name].Fix == "" && name != "ip_vs" {
			t.Errorf("%s: %s without a fix hint", name, m[name].Status)
		}
	}
	if !Failed(rs) {
		t.Error("Failed() is false")
	}
	if !strings.Contains(m["cgroups"].Message, "missing controllers: memory pids") {
		t.Errorf("cgroups message %q", m["cgroups"].Message)
	}
	// A running server on the same data dir explains busy ports.
	cfg.ServerRunning = true
	if r := byName(Run(cfg))["port 2379"]; r.Status != OK {
		t.Errorf("port with server running: %+v", r)
	}
}

func TestParseKernel(t *testing.T) {
	for rel, want := range map[string][2]int{"6.18.44-fc-v595": {6, 18}, "5.4.0": {5, 4}, "4.19+": {4, 19}} {
		if v, ok := parseKernel(rel); !ok || v != want {
			t.Errorf("%s: %v %v", rel, v, ok)
		}
	}
}

// Above 85% use the data dir warns with the figure, even with many GiB
// free; a snapshot dir on another filesystem gets a line of its own, one on
// the data dir's filesystem none.
func TestDiskWarnsAbove85PercentUse(t *testing.T) {
	cfg := fakeHost(t, hybrid)
	cfg.DataDir, cfg.SnapshotDir = "/var/lib/kubox", "/mnt/usb/snapshots"
	// Data dir: 1000 GiB, 900 used, 50 free for users (50 reserved for
	// root): df shows 95%. The snapshot dir: 100 GiB, 80 used, 20 free.
	cfg.Statfs = func(p string, st *unix.Statfs_t) error {
		st.Type, st.Bsize = 0xEF53, 4096
		total, used, free := int64(1000), int64(900), int64(50)
		if strings.HasPrefix(p, "/mnt") {
			total, used, free = 100, 80, 20
		}
		st.Blocks, st.Bfree, st.Bavail = uint64(total*GiB/4096), uint64((total-used)*GiB/4096), uint64(free*GiB/4096)
		return nil
	}
	cfg.SameFS = func(a, b string) (bool, error) { return false, nil }
	m := byName(Run(cfg))
	if r := m["data dir"]; r.Status != Warn || !strings.Contains(r.Message, "95% used (above 85%)") || r.Fix == "" {
		t.Errorf("data dir: %+v", r)
	}
	if r := m["snapshot dir"]; r.Status != OK || !strings.Contains(r.Message, "/mnt/usb/snapshots") || !strings.Contains(r.Message, "80% used") {
		t.Errorf("snapshot dir: %+v", r)
	}
	cfg.SameFS = func(a, b string) (bool, error) { return true, nil }
	if r, ok := byName(Run(cfg))["snapshot dir"]; ok {
		t.Errorf("snapshot dir on the data dir's filesystem got a line: %+v", r)
	}
	// The snapshot dir's disk above 85% warns too.
	cfg.SameFS = func(a, b string) (bool, error) { return false, nil }
	cfg.Statfs = func(p string, st *unix.Statfs_t) error {
		st.Type, st.Bsize, st.Blocks, st.Bfree, st.Bavail = 0xEF53, 4096, 1000, 100, 100
		return nil
	}
	if r := byName(Run(cfg))["snapshot dir"]; r.Status != Warn || !strings.Contains(r.Message, "90% used") || r.Fix == "" {
		t.Errorf("full snapshot dir: %+v", r)
	}
}

func TestEtcdSpaceCheck(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		in   EtcdSpace
		want Status
	}{
		{EtcdSpace{Size: 40 * mib, Quota: 2 * GiB}, OK},
		{EtcdSpace{Size: 1700 * mib, Quota: 2 * GiB}, Warn},
		{EtcdSpace{Size: 20 * mib, Quota: 32 * mib, NoSpace: true}, Fail},
		{EtcdSpace{Err: "context deadline exceeded"}, Warn},
	} {
		r := EtcdSpaceCheck(tc.in)
		if r.Status != tc.want {
			t.Errorf("EtcdSpaceCheck(%+v) = %s %q, want %s", tc.in, r.Status, r.Message, tc.want)
		}
		if r.Status != OK && r.Fix == "" {
			t.Errorf("EtcdSpaceCheck(%+v): no fix given", tc.in)
		}
	}
	if got := EtcdSpaceCheck(EtcdSpace{Size: 1700 * mib, Quota: 2 * GiB}).Message; got != "database 1.7 GiB of a 2.0 GiB quota (83%)" {
		t.Errorf("message %q", got)
	}
}
