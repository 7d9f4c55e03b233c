// Package hostcheck inspects a host before and while kubox runs on it: the
// kernel, cgroups, overlayfs, nftables, IPVS, the link types the pod network
// needs, ports, disk, memory, clock, capabilities and swap.
//
// It is its own package, not part of server/, because it must run on a box
// where kubox was never installed, change nothing on the host, and be tested
// against fake /proc and /sys trees: every file it reads is below ProcRoot or
// SysRoot, and every probe that needs the live kernel is an injectable
// function. server/ pulls in all of Kubernetes and acts on the host; this
// package only reads.
package hostcheck

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/proxy/mode"
)

// Status is the verdict of one check.
type Status string

const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is one line of `kubox check`.
type Result struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Port is a TCP port kubox will listen on.
type Port struct {
	Host string `json:"host,omitempty"`
	Port int    `json:"port"`
	What string `json:"what"`
	Flag string `json:"flag"`
}

// Config says what to check and where to look. Zero fields take the live
// host's values.
type Config struct {
	ProcRoot string // default /proc
	SysRoot  string // default /sys
	DataDir  string // the data dir (or its nearest existing parent) is checked for space; the caller knows kubox's default
	// SnapshotDir, when set and on another filesystem than DataDir, gets a
	// line of its own (use above DiskWarnPercent).
	SnapshotDir string
	Ports       []Port
	// ServerRunning: a kubox server holds the data dir, so its ports being
	// in use is expected.
	ServerRunning bool
	// ProxyMode and IPVSScheduler are kubox server's proxy-mode and
	// ipvs-scheduler: the proxy mode line reports what the server would
	// choose with them. Empty means auto and rr.
	ProxyMode     string
	IPVSScheduler string
	ModulesDir    string // default /lib/modules/<release>

	LookPath       func(string) (string, error)                     // default exec.LookPath
	ProbeKernel    func(nftPath string) map[string]error            // default ProbeKernel: link types and nf_tables in a throwaway netns
	Listen         func(network, addr string) (net.Listener, error) // default net.Listen
	Statfs         func(path string, st *unix.Statfs_t) error       // default unix.Statfs
	SameFS         func(a, b string) (bool, error)                  // default diskspace.SameFilesystem
	Adjtimex       func(*unix.Timex) (int, error)                   // default unix.Adjtimex
	CapSysResource func() bool                                      // nil: reported as unknown
}

func (c *Config) defaults() {
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.SysRoot == "" {
		c.SysRoot = "/sys"
	}
	if c.LookPath == nil {
		c.LookPath = exec.LookPath
	}
	if c.ProbeKernel == nil {
		c.ProbeKernel = ProbeKernel
	}
	if c.Listen == nil {
		c.Listen = net.Listen
	}
	if c.Statfs == nil {
		c.Statfs = unix.Statfs
	}
	if c.Adjtimex == nil {
		c.Adjtimex = unix.Adjtimex
	}
	if c.SameFS == nil {
		c.SameFS = diskspace.SameFilesystem
	}
}

// Failed reports whether any result is a FAIL.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

// Run runs every check and returns one result per line, in a fixed order.
func Run(cfg Config) []Result {
	cfg.defaults()
	nftPath, nftErr := cfg.LookPath("nft")
	if nftErr != nil {
		nftPath = ""
	}
	probe := cfg.ProbeKernel(nftPath)
	var rs []Result
	rs = append(rs, cfg.kernel())
	rs = append(rs, cfg.cgroups())
	rs = append(rs, cfg.overlay())
	nft := cfg.nftables(nftPath, probe)
	rs = append(rs, nft)
	rs = append(rs, cfg.ipvs())
	rs = append(rs, cfg.proxyMode(nft.Status == OK))
	rs = append(rs, cfg.links(probe)...)
	rs = append(rs, cfg.ports()...)
	rs = append(rs, cfg.disk())
	if r, ok := cfg.snapshotDisk(); ok {
		rs = append(rs, r)
	}
	rs = append(rs, cfg.memory())
	rs = append(rs, cfg.clock())
	rs = append(rs, cfg.capSysResource())
	rs = append(rs, cfg.swap())
	return rs
}

func (c *Config) proc(p string) string { return filepath.Join(c.ProcRoot, p) }
func (c *Config) sys(p string) string  { return filepath.Join(c.SysRoot, p) }

// hasModule tells whether the kernel shows a module (loaded, or built in
// with parameters) under /sys/module.
func (c *Config) hasModule(name string) bool {
	_, err := os.Stat(c.sys(filepath.Join("module", name)))
	return err == nil
}

// Kernel versions: below minKernel the kubelet and containerd are not
// supported; below goodKernel some features (cgroup v2 cpusets, nftables
// features kube-proxy uses) are missing.
var (
	minKernel  = [2]int{4, 15}
	goodKernel = [2]int{5, 4}
)

func (c *Config) kernel() Result {
	r := Result{Name: "kernel"}
	data, err := os.ReadFile(c.proc("sys/kernel/osrelease"))
	if err != nil {
		r.Status, r.Message, r.Fix = Fail, "cannot read the kernel version: "+err.Error(), "run kubox check on Linux with /proc mounted"
		return r
	}
	rel := strings.TrimSpace(string(data))
	r.Message = rel
	v, ok := parseKernel(rel)
	switch {
	case !ok:
		r.Status, r.Message = Warn, rel+" (version not understood)"
		r.Fix = "use a kernel 5.4 or newer"
	case less(v, minKernel):
		r.Status, r.Fix = Fail, fmt.Sprintf("upgrade the kernel to %d.%d or newer (5.4+ advised)", minKernel[0], minKernel[1])
	case less(v, goodKernel):
		r.Status, r.Fix = Warn, "upgrade the kernel to 5.4 or newer"
	default:
		r.Status = OK
	}
	return r
}

func parseKernel(rel string) ([2]int, bool) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minor := strings.TrimLeftFunc(parts[1], func(r rune) bool { return false })
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	mn, err2 := strconv.Atoi(minor)
	return [2]int{maj, mn}, err1 == nil && err2 == nil
}

func less(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// cgroup controllers the kubelet needs (v1 names; v2 has no cpuacct).
var (
	neededControllers  = []string{"cpu", "memory", "pids"}
	advisedControllers = []string{"cpuset"} // the CPU manager's static policy pins CPUs with it
)

func (c *Config) cgroups() Result {
	r := Result{Name: "cgroups"}
	mounts, err := readMountinfo(c.proc("self/mountinfo"))
	if err != nil {
		r.Status, r.Message, r.Fix = Fail, "cannot read mounts: "+err.Error(), "mount /proc"
		return r
	}
	var v1 []string
	v2Mount := ""
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			if v2Mount == "" {
				v2Mount = m.point
			}
		case "cgroup":
			for _, o := range strings.Split(m.superOpts, ",") {
				if isV1Controller(o) && !slices.Contains(v1, o) {
					v1 = append(v1, o)
				}
			}
		}
	}
	var v2 []string
	if v2Mount != "" {
		if data, err := os.ReadFile(c.hostPath(filepath.Join(v2Mount, "cgroup.controllers"))); err == nil {
			v2 = strings.Fields(string(data))
		}
	}
	slices.Sort(v1)
	slices.Sort(v2)
	have := append(slices.Clone(v1), v2...)
	var mode string
	switch {
	case len(v1) == 0 && v2Mount != "":
		mode = "v2 at " + v2Mount + ": " + strings.Join(v2, " ")
	case len(v1) > 0 && v2Mount != "":
		mode = "hybrid (v1 controllers, cgroup2 at " + v2Mount + "); v1: " + strings.Join(v1, " ")
		if len(v2) > 0 {
			mode += "; v2: " + strings.Join(v2, " ")
		}
	case len(v1) > 0:
		mode = "v1: " + strings.Join(v1, " ")
	default:
		r.Status, r.Message, r.Fix = Fail, "no cgroup file system is mounted", "mount cgroup2 at /sys/fs/cgroup (boot with systemd, or: mount -t cgroup2 none /sys/fs/cgroup)"
		return r
	}
	r.Message = mode
	var missing, missingAdvised []string
	for _, n := range neededControllers {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	for _, n := range advisedControllers {
		if !slices.Contains(have, n) {
			missingAdvised = append(missingAdvised, n)
		}
	}
	switch {
	case len(missing) > 0:
		r.Status = Fail
		r.Message += "; missing controllers: " + strings.Join(missing, " ")
		r.Fix = "enable the " + strings.Join(missing, ", ") + " cgroup controllers (kernel config or boot parameters such as cgroup_enable=memory)"
	case len(missingAdvised) > 0:
		r.Status = Warn
		r.Message += "; missing controllers: " + strings.Join(missingAdvised, " ")
		r.Fix = "enable the cpuset cgroup controller, needed by cpu-manager-policy static"
	case len(v1) > 0:
		r.Status = Warn
		r.Fix = "cgroup v1 is deprecated in Kubernetes and kubox runs it with failCgroupV1=false; boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2 when you can"
	default:
		r.Status = OK
	}
	return r
}

func isV1Controller(opt string) bool {
	switch opt {
	case "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc":
		return true
	}
	return false
}

// hostPath maps a path as the host sees it (/sys/..., /proc/...) into the
// configured roots, so fake trees work.
func (c *Config) hostPath(p string) string {
	switch {
	case p == "/sys" || strings.HasPrefix(p, "/sys/"):
		return filepath.Join(c.SysRoot, strings.TrimPrefix(p, "/sys"))
	case p == "/proc" || strings.HasPrefix(p, "/proc/"):
		return filepath.Join(c.ProcRoot, strings.TrimPrefix(p, "/proc"))
	}
	return p
}

type mount struct{ point, fstype, superOpts string }

// readMountinfo parses /proc/self/mountinfo: mount point is field 5, then
// optional fields up to "-", then fs type, source and super options.
func readMountinfo(path string) ([]mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		i := slices.Index(fields, "-")
		if len(fields) < 5 || i < 0 || len(fields) < i+4 {
			continue
		}
		out = append(out, mount{point: unescape(fields[4]), fstype: fields[i+1], superOpts: fields[i+3]})
	}
	return out, sc.Err()
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (c *Config) filesystems() []string {
	data, err := os.ReadFile(c.proc("filesystems"))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 {
			out = append(out, f[len(f)-1])
		}
	}
	return out
}

func (c *Config) overlay() Result {
	r := Result{Name: "overlayfs"}
	if slices.Contains(c.filesystems(), "overlay") || c.hasModule("overlay") {
		r.Status, r.Message = OK, "available"
		return r
	}
	r.Status, r.Message = Fail, "the kernel has no overlay file system"
	r.Fix = "modprobe overlay (and add it to /etc/modules-load.d), or use a kernel with CONFIG_OVERLAY_FS"
	return r
}

func (c *Config) nftables(nftPath string, probe map[string]error) Result {
	r := Result{Name: "nftables"}
	kernelErr, probed := probe["nf_tables"]
	kernel := probed && kernelErr == nil || !probed && c.hasModule("nf_tables")
	switch {
	case nftPath != "" && kernel:
		r.Status, r.Message = OK, "nft tool at "+nftPath+"; kernel nf_tables works"
	case nftPath == "":
		r.Status, r.Message = Warn, "the nft tool is not installed; pod traffic is masqueraded with iptables instead"
		r.Fix = "install nftables (apt-get install nftables)"
	default:
		r.Status, r.Message = Fail, "the kernel refuses nftables"
		if kernelErr != nil {
			r.Message += ": " + oneLine(kernelErr)
		}
		r.Fix = "modprobe nf_tables, or use a kernel with CONFIG_NF_TABLES"
	}
	return r
}

// ipvs reports whether the kernel has IPVS, loaded or as a module file.
func (c *Config) ipvs() Result {
	r := Result{Name: "ip_vs", Status: OK}
	if _, err := os.Stat(c.proc("net/ip_vs")); err == nil || c.hasModule("ip_vs") {
		r.Message = "present"
		return r
	}
	r.Message = "not present (the service proxy uses nftables)"
	return r
}

// proxyMode reports the service proxy mode kubox server would run with the
// configured proxy-mode, by the same selection the server makes.
func (c *Config) proxyMode(nftOK bool) Result {
	r := Result{Name: "proxy mode"}
	req, err := mode.Parse(c.ProxyMode)
	if err == nil {
		err = mode.CheckScheduler(c.IPVSScheduler)
	}
	if err != nil {
		r.Status, r.Message, r.Fix = Fail, err.Error(), "fix proxy-mode / ipvs-scheduler in the config file"
		return r
	}
	host := mode.Detect(mode.Probe{ProcRoot: c.ProcRoot, SysRoot: c.SysRoot, ModulesDir: c.ModulesDir, LookPath: c.LookPath})
	choice, err := mode.Select(req, c.IPVSScheduler, host)
	switch {
	case err != nil:
		r.Status, r.Message = Fail, err.Error()
		r.Fix = "load ip_vs (modprobe ip_vs) or nf_tables, install the nft tool, or set proxy-mode to a mode this host has"
	case choice.Mode == mode.NFTables && !nftOK:
		r.Status, r.Message = Fail, choice.String()+", but the kernel refuses nftables"
		r.Fix = "modprobe nf_tables, or use a kernel with CONFIG_NF_TABLES"
	default:
		r.Status, r.Message = OK, choice.String()
	}
	return r
}

// links reports the link types the pod network needs.
func (c *Config) links(probe map[string]error) []Result {
	var rs []Result
	for _, l := range []struct {
		kind     string
		required bool
		use      string
	}{
		{"bridge", true, "the pod network bridge"},
		{"veth", true, "pod network interfaces"},
		{"vxlan", false, "overlay networking between hosts"},
	} {
		r := Result{Name: l.kind}
		err, probed := probe[l.kind]
		switch {
		case probed && err == nil:
			r.Status, r.Message = OK, "works (created in a throwaway network namespace)"
		case !probed && c.hasModule(l.kind):
			r.Status, r.Message = OK, "module present"
		default:
			r.Status = Fail
			if !l.required {
				r.Status = Warn
			}
			r.Message = "not available for " + l.use
			if err != nil {
				r.Message += ": " + oneLine(err)
			}
			r.Fix = "modprobe " + l.kind + ", or use a kernel with it built in"
		}
		rs = append(rs, r)
	}
	return rs
}

func (c *Config) ports() []Result {
	var rs []Result
	for _, p := range c.Ports {
		addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
		r := Result{Name: fmt.Sprintf("port %d", p.Port)}
		l, err := c.Listen("tcp", addr)
		switch {
		case err == nil:
			l.Close()
			r.Status, r.Message = OK, "free ("+p.What+")"
		case errors.Is(err, unix.EADDRINUSE) && c.ServerRunning:
			r.Status, r.Message = OK, "in use, by the kubox server running on this data dir ("+p.What+")"
		case errors.Is(err, unix.EADDRINUSE):
			r.Status, r.Message = Fail, "in use ("+p.What+")"
			r.Fix = fmt.Sprintf("stop what holds it (ss -ltnp 'sport = :%d') or set %s", p.Port, p.Flag)
		case errors.Is(err, unix.EADDRNOTAVAIL):
			r.Status, r.Message = Fail, "cannot listen on "+addr+" ("+p.What+"): address not on this host"
			r.Fix = "set --node-ip to an address of this host"
		default:
			r.Status, r.Message = Warn, "cannot test "+addr+" ("+p.What+"): "+oneLine(err)
			r.Fix = "run kubox check as root"
		}
		rs = append(rs, r)
	}
	return rs
}

// Disk thresholds for the data dir: etcd, images and logs.
const (
	GiB          = 1 << 30
	diskFailFree = 2 * GiB
	diskWarnFree = 10 * GiB
)

var fsNames = map[int64]string{
	0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs", 0x794c7630: "overlay",
	0x2fc12fc1: "zfs", 0x6969: "nfs", 0xFF534D42: "cifs", 0xF2F52010: "f2fs", 0x65735546: "fuse",
}

// DiskWarnPercent: above this use of its filesystem (df's Use%) the data
// dir, or a snapshot dir on another filesystem, gets a warning. The
// kubelet's image garbage collection starts at the same 85%.
const DiskWarnPercent = 85

func (c *Config) disk() Result {
	r := Result{Name: "data dir"}
	if c.DataDir == "" {
		r.Status, r.Message, r.Fix = Warn, "no data dir given: nothing checked", "set --data-dir"
		return r
	}
	m, err := c.measure(c.DataDir)
	if err != nil {
		r.Status, r.Message, r.Fix = Warn, err.Error(), "create "+c.DataDir+" on a local disk"
		return r
	}
	r.Message = m.message
	switch {
	case m.free < diskFailFree:
		r.Status, r.Fix = Fail, "free space under "+m.at+" (at least 2 GiB; 10 GiB advised) or set --data-dir to a bigger disk"
	case m.fsType == "tmpfs":
		r.Status, r.Fix = Warn, "the data dir is in memory and lost on reboot: set --data-dir to a disk"
	case m.fsType == "overlay" || m.fsType == "nfs" || m.fsType == "cifs" || m.fsType == "fuse":
		r.Status, r.Fix = Warn, "containerd's overlayfs snapshotter and etcd want a local disk file system (ext4, xfs): set --data-dir to one"
	case m.free < diskWarnFree:
		r.Status, r.Fix = Warn, "free space under "+m.at+" (10 GiB advised for images and etcd)"
	case m.full:
		r.Status, r.Fix = Warn, "free space under "+m.at+": kubox stops when less than 2% of the disk (64 to 256 MiB) is free"
	default:
		r.Status = OK
	}
	return r
}

// snapshotDisk is the snapshot dir's line, when it is on a filesystem of
// its own.
func (c *Config) snapshotDisk() (Result, bool) {
	if c.SnapshotDir == "" || c.DataDir == "" {
		return Result{}, false
	}
	if same, err := c.SameFS(c.DataDir, c.SnapshotDir); err == nil && same {
		return Result{}, false
	}
	r := Result{Name: "snapshot dir", Status: OK}
	m, err := c.measure(c.SnapshotDir)
	switch {
	case err != nil:
		r.Status, r.Message, r.Fix = Warn, err.Error(), "create "+c.SnapshotDir+" or set snapshot-dir"
	case m.full:
		r.Message = m.message
		r.Status, r.Fix = Warn, "free space under "+m.at+" or remove old snapshots (kubox snapshot prune --keep N)"
	default:
		r.Message = m.message
	}
	return r, true
}

type measured struct {
	message, fsType, at string
	free                int64
	full                bool // above DiskWarnPercent
}

// measure reports dir's (or its nearest existing parent's) free space, use
// and filesystem type.
func (c *Config) measure(dir string) (measured, error) {
	at := dir
	for {
		if _, err := os.Stat(at); err == nil || at == "/" || at == "." {
			break
		}
		at = filepath.Dir(at)
	}
	var st unix.Statfs_t
	if err := c.Statfs(at, &st); err != nil {
		return measured{}, errors.New("cannot stat " + at + ": " + oneLine(err))
	}
	u := diskspace.FromStatfs(&st)
	m := measured{at: at, free: u.Free}
	var ok bool
	if m.fsType, ok = fsNames[int64(st.Type)]; !ok {
		m.fsType = fmt.Sprintf("0x%x", st.Type)
	}
	where := dir
	if at != dir {
		where = dir + " (not created yet; checked " + at + ")"
	}
	pct := u.PercentUsed()
	m.full = pct > DiskWarnPercent
	m.message = fmt.Sprintf("%s: %s free on %s, %.0f%% used", where, humanBytes(u.Free), m.fsType, pct)
	if m.full {
		m.message += fmt.Sprintf(" (above %d%%)", DiskWarnPercent)
	}
	return m, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= GiB:
		return fmt.Sprintf("%.1f GiB", float64(n)/GiB)
	default:
		return fmt.Sprintf("%d MiB", n>>20)
	}
}

// Memory thresholds: the whole node idles near 400 MB.
const (
	memFail = 1 * GiB
	memWarn = 2 * GiB
)

func (c *Config) meminfo() map[string]int64 {
	out := map[string]int64{}
	data, err := os.ReadFile(c.proc("meminfo"))
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[strings.TrimSuffix(f[0], ":")] = v * 1024
			}
		}
	}
	return out
}

func (c *Config) memory() Result {
	r := Result{Name: "memory"}
	mi := c.meminfo()
	total, ok := mi["MemTotal"]
	if !ok {
		r.Status, r.Message, r.Fix = Warn, "cannot read /proc/meminfo", "mount /proc"
		return r
	}
	r.Message = fmt.Sprintf("%s total, %s available", humanBytes(total), humanBytes(mi["MemAvailable"]))
	switch {
	case total < memFail:
		r.Status, r.Fix = Fail, "kubox needs at least 1 GiB of memory (2 GiB advised)"
	case total < memWarn:
		r.Status, r.Fix = Warn, "2 GiB of memory or more is advised; little is left for pods"
	default:
		r.Status = OK
	}
	return r
}

func (c *Config) clock() Result {
	r := Result{Name: "clock sync"}
	var tx unix.Timex
	state, err := c.Adjtimex(&tx)
	if err != nil {
		r.Status, r.Message, r.Fix = Warn, "cannot ask the kernel: "+oneLine(err), "run chrony or systemd-timesyncd"
		return r
	}
	if state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0 {
		r.Status, r.Message = Warn, "the kernel clock is not synchronized"
		r.Fix = "run an NTP client (chrony, systemd-timesyncd); certificates and etcd need a correct clock"
		return r
	}
	r.Status = OK
	r.Message = fmt.Sprintf("synchronized (max error %d ms)", tx.Maxerror/1000)
	return r
}

func (c *Config) capSysResource() Result {
	r := Result{Name: "CAP_SYS_RESOURCE"}
	switch {
	case c.CapSysResource == nil:
		r.Status, r.Message = Warn, "not checked"
	case c.CapSysResource():
		r.Status, r.Message = OK, "present"
	default:
		r.Status, r.Message = Warn, "missing: containerd runs with restrict_oom_score_adj, so system pods cannot get negative OOM scores"
		r.Fix = "run kubox as real root, outside a container that drops CAP_SYS_RESOURCE"
	}
	return r
}

func (c *Config) swap() Result {
	r := Result{Name: "swap"}
	data, err := os.ReadFile(c.proc("swaps"))
	if err != nil {
		r.Status, r.Message = Warn, "cannot read /proc/swaps"
		return r
	}
	var devs []string
	for i, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(l); i > 0 && len(f) > 0 {
			devs = append(devs, f[0])
		}
	}
	if len(devs) == 0 {
		r.Status, r.Message = OK, "off"
		return r
	}
	r.Status, r.Message = Warn, "on ("+strings.Join(devs, ", ")+"); the kubelet runs with failSwapOn=false and pods may be swapped"
	r.Fix = "swapoff -a and remove swap from /etc/fstab, for predictable pod memory"
	return r
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
