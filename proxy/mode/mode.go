// Package mode chooses the service proxy mode from what the host offers.
//
// It is the one implementation behind both `kubox server` (which logs the
// choice and runs that proxier) and `kubox check` (which reports it), so
// the two can never disagree. It only reads files and looks up tools, so it
// is safe on any host and testable against fake /proc and /sys trees; it
// imports nothing of Kubernetes.
package mode

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Mode is a service proxy mode.
type Mode string

const (
	Auto     Mode = "auto"
	IPVS     Mode = "ipvs"
	NFTables Mode = "nftables"
	IPTables Mode = "iptables"
)

// Modes lists the values proxy-mode accepts.
var Modes = []Mode{Auto, IPVS, NFTables, IPTables}

// Schedulers lists the IPVS schedulers kubox accepts (those kube-proxy
// documents): round robin, least connection, destination hashing, source
// hashing, shortest expected delay, never queue, weighted round robin.
var Schedulers = []string{"rr", "lc", "dh", "sh", "sed", "nq", "wrr"}

// DefaultScheduler is kube-proxy's default.
const DefaultScheduler = "rr"

// Parse checks a proxy-mode value; "" means auto.
func Parse(s string) (Mode, error) {
	if s == "" {
		return Auto, nil
	}
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Modes, m) {
		return "", fmt.Errorf("--proxy-mode %q: must be auto, ipvs, nftables or iptables", s)
	}
	return m, nil
}

// CheckScheduler checks an ipvs-scheduler value; "" means rr.
func CheckScheduler(s string) error {
	if s == "" || slices.Contains(Schedulers, s) {
		return nil
	}
	return fmt.Errorf("--ipvs-scheduler %q: must be one of %s", s, strings.Join(Schedulers, ", "))
}

// Host is what the proxy modes need from the host.
type Host struct {
	IPVS bool // the kernel has ip_vs loaded or built in (/proc/net/ip_vs)
	// Schedulers maps each IPVS scheduler to whether the kernel has it
	// (loaded, built in, or a module the kernel can load on demand).
	Schedulers map[string]bool
	NFT        bool // the nft tool, which the nftables proxier drives
	IPTables   bool // iptables-restore, used by the iptables and ipvs proxiers
	IPSet      bool // the ipset tool, used by the ipvs proxier
}

// Probe says where to look; zero fields take the live host's values.
type Probe struct {
	ProcRoot   string                       // default /proc
	SysRoot    string                       // default /sys
	ModulesDir string                       // default /lib/modules/<release>
	LookPath   func(string) (string, error) // default exec.LookPath
}

// Detect reads the host. It changes nothing.
func Detect(p Probe) Host {
	if p.ProcRoot == "" {
		p.ProcRoot = "/proc"
	}
	if p.SysRoot == "" {
		p.SysRoot = "/sys"
	}
	if p.LookPath == nil {
		p.LookPath = exec.LookPath
	}
	if p.ModulesDir == "" {
		if rel, err := os.ReadFile(filepath.Join(p.ProcRoot, "sys/kernel/osrelease")); err == nil {
			p.ModulesDir = filepath.Join("/lib/modules", strings.TrimSpace(string(rel)))
		}
	}
	has := func(tool string) bool { _, err := p.LookPath(tool); return err == nil }
	h := Host{
		NFT:        has("nft"),
		IPTables:   has("iptables-restore"),
		IPSet:      has("ipset"),
		Schedulers: map[string]bool{},
	}
	if _, err := os.Stat(filepath.Join(p.ProcRoot, "net/ip_vs")); err == nil {
		h.IPVS = true
	}
	builtin := moduleList(filepath.Join(p.ModulesDir, "modules.builtin"))
	loadable := moduleList(filepath.Join(p.ModulesDir, "modules.dep"))
	canLoad := modulesLoadable(p.ProcRoot)
	for _, s := range Schedulers {
		name := "ip_vs_" + s
		_, err := os.Stat(filepath.Join(p.SysRoot, "module", name))
		h.Schedulers[s] = err == nil || builtin[name] || canLoad && loadable[name]
	}
	return h
}

// modulesLoadable tells whether the kernel loads modules at all: it has
// module support (/proc/modules) and loading is not switched off.
func modulesLoadable(procRoot string) bool {
	if _, err := os.Stat(filepath.Join(procRoot, "modules")); err != nil {
		return false
	}
	data, err := os.ReadFile(filepath.Join(procRoot, "sys/kernel/modules_disabled"))
	return err != nil || strings.TrimSpace(string(data)) != "1"
}

// moduleList reads the module names of modules.builtin or modules.dep
// ("kernel/net/netfilter/ipvs/ip_vs_rr.ko[.xz]: deps...").
func moduleList(path string) map[string]bool {
	m := map[string]bool{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		file, _, _ := strings.Cut(sc.Text(), ":")
		base := filepath.Base(strings.TrimSpace(file))
		if i := strings.Index(base, ".ko"); i > 0 {
			m[strings.ReplaceAll(base[:i], "-", "_")] = true
		}
	}
	return m
}

// Choice is the mode to run and why, in words for a log line or
// `kubox check`.
type Choice struct {
	Mode   Mode
	Reason string
}

func (c Choice) String() string { return string(c.Mode) + ": " + c.Reason }

// Select picks the mode for a requested one (auto or forced) and an IPVS
// scheduler ("" = rr). auto is IPVS when the kernel has ip_vs with the
// scheduler and the ipvs proxier's tools are installed, else nftables, else
// (no nft tool) iptables. A forced mode the host cannot run is an error
// that says what is missing and what to do.
func Select(req Mode, scheduler string, h Host) (Choice, error) {
	if scheduler == "" {
		scheduler = DefaultScheduler
	}
	ipvsMissing := h.ipvsMissing(scheduler)
	switch req {
	case IPVS:
		if ipvsMissing != "" {
			return Choice{}, fmt.Errorf("proxy mode ipvs: %s; load the modules (modprobe ip_vs ip_vs_%s) and install ipset and iptables, or use --proxy-mode auto or nftables", ipvsMissing, scheduler)
		}
		return Choice{IPVS, "forced by proxy-mode (kernel has ip_vs and the " + scheduler + " scheduler)"}, nil
	case NFTables:
		if !h.NFT {
			return Choice{}, fmt.Errorf("proxy mode nftables: the nft tool is not installed; install nftables (apt-get install nftables), or use --proxy-mode auto")
		}
		return Choice{NFTables, "forced by proxy-mode"}, nil
	case IPTables:
		if !h.IPTables {
			return Choice{}, fmt.Errorf("proxy mode iptables: iptables-restore is not installed; install iptables, or use --proxy-mode auto")
		}
		return Choice{IPTables, "forced by proxy-mode"}, nil
	case Auto, "":
	default:
		return Choice{}, fmt.Errorf("proxy mode %q: must be auto, ipvs, nftables or iptables", req)
	}
	if ipvsMissing == "" {
		return Choice{IPVS, "/proc/net/ip_vs present, with the " + scheduler + " scheduler"}, nil
	}
	if h.NFT {
		return Choice{NFTables, ipvsMissing}, nil
	}
	if h.IPTables {
		return Choice{IPTables, ipvsMissing + ", and the nft tool is not installed"}, nil
	}
	return Choice{}, fmt.Errorf("no service proxy mode works here: %s, and neither nft nor iptables is installed; install nftables (apt-get install nftables)", ipvsMissing)
}

// ipvsMissing says what the host lacks for IPVS mode, or "".
func (h Host) ipvsMissing(scheduler string) string {
	switch {
	case !h.IPVS:
		return "kernel has no ip_vs"
	case !h.Schedulers[scheduler]:
		return "kernel has ip_vs but not its " + scheduler + " scheduler (ip_vs_" + scheduler + ")"
	case !h.IPSet:
		return "kernel has ip_vs but the ipset tool is not installed"
	case !h.IPTables:
		return "kernel has ip_vs but iptables is not installed"
	}
	return ""
}
