// Package vm boots Debian's kernel (apt package linux-image-amd64) under
// qemu-system-x86_64 with TCG, from an initramfs it builds: busybox-static,
// the kernel modules the guest needs (with their dependencies, from
// modules.dep), dynamically linked host tools with their libraries (ipset,
// iptables), and a static guest program of kubox's. It returns what the
// guest printed on the serial console.
//
// This host's kernel has no IPVS and loads no modules; Debian's has both, so
// the service proxy's IPVS mode is tested against a real kernel this way.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Kernel is a bootable kernel image and its modules.
type Kernel struct {
	Release string // 6.1.0-56-amd64
	Image   string // /boot/vmlinuz-<release>
	Modules string // /lib/modules/<release>
}

// FindKernel finds an installed kernel with modules, preferring the newest
// Debian one; it is not the running kernel on this host (which has none).
func FindKernel() (Kernel, error) {
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		rel := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join("/lib/modules", rel)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			return Kernel{Release: rel, Image: img, Modules: mods}, nil
		}
	}
	return Kernel{}, errors.New("no kernel with modules under /boot and /lib/modules: apt-get install linux-image-amd64")
}

// ModuleClosure returns the module files (paths relative to k.Modules)
// that loading names needs, dependencies before the modules that need them.
func (k Kernel) ModuleClosure(names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(k.Modules, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{} // module file -> its dependency files
	byName := map[string]string{} // module name -> file
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(rest)
		byName[moduleName(file)] = file
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	softPre := k.softdeps(byName)
	var order []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		// Soft dependencies ("pre:", e.g. libcrc32c needs a crc32c
		// implementation at init) and modules.dep's (transitive) hard
		// ones come first.
		for _, d := range softPre[moduleName(file)] {
			visit(d)
		}
		for _, d := range deps[file] {
			visit(d)
		}
		order = append(order, file)
	}
	for _, n := range names {
		file, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s is not in %s/modules.dep", n, k.Modules)
		}
		visit(file)
	}
	return order, nil
}

// softdeps maps a module name to the files of its "pre:" soft
// dependencies, resolved through modules.alias (preferring a generic
// implementation over a CPU-specific one).
func (k Kernel) softdeps(byName map[string]string) map[string][]string {
	aliases := map[string][]string{}
	if data, err := os.ReadFile(filepath.Join(k.Modules, "modules.alias")); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "alias" {
				aliases[f[1]] = append(aliases[f[1]], f[2])
			}
		}
	}
	resolve := func(name string) string {
		if file, ok := byName[name]; ok {
			return file
		}
		cands := aliases[name]
		for _, c := range cands {
			if strings.Contains(c, "generic") {
				return byName[c]
			}
		}
		if len(cands) > 0 {
			return byName[cands[0]]
		}
		return ""
	}
	out := map[string][]string{}
	data, err := os.ReadFile(filepath.Join(k.Modules, "modules.softdep"))
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if file := resolve(w); pre && file != "" {
					out[f[1]] = append(out[f[1]], file)
				}
			}
		}
	}
	return out
}

func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i > 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// Initramfs builds a newc cpio archive in memory order.
type Initramfs struct {
	entries []entry
	dirs    map[string]bool
	files   map[string]bool
}

type entry struct {
	name string
	mode uint32
	data []byte
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
)

// NewInitramfs returns an empty archive.
func NewInitramfs() *Initramfs {
	return &Initramfs{dirs: map[string]bool{}, files: map[string]bool{}}
}

func (r *Initramfs) dir(p string) {
	p = strings.TrimPrefix(filepath.Clean(p), "/")
	if p == "." || p == "" || r.dirs[p] {
		return
	}
	r.dir(filepath.Dir(p))
	r.dirs[p] = true
	r.entries = append(r.entries, entry{name: p, mode: modeDir | 0o755})
}

// Dir adds a directory (and its parents).
func (r *Initramfs) Dir(p string) { r.dir(p) }

// Bytes adds a file with the given content.
func (r *Initramfs) Bytes(dst string, data []byte, perm uint32) {
	dst = strings.TrimPrefix(filepath.Clean(dst), "/")
	if r.files[dst] {
		return
	}
	r.dir(filepath.Dir(dst))
	r.files[dst] = true
	r.entries = append(r.entries, entry{name: dst, mode: modeFile | perm, data: data})
}

// File adds a copy of a host file (symlinks followed).
func (r *Initramfs) File(dst, src string, perm uint32) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	r.Bytes(dst, data, perm)
	return nil
}

// Symlink adds a symbolic link.
func (r *Initramfs) Symlink(dst, target string) {
	dst = strings.TrimPrefix(filepath.Clean(dst), "/")
	if r.files[dst] {
		return
	}
	r.dir(filepath.Dir(dst))
	r.files[dst] = true
	r.entries = append(r.entries, entry{name: dst, mode: modeLink | 0o777, data: []byte(target)})
}

// libDirs are where the dynamic linker of Debian amd64 looks.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"}

// ELF adds a dynamically linked host binary (or shared object) with its
// interpreter and every library it needs, at the same paths.
func (r *Initramfs) ELF(dst, src string) error {
	if err := r.File(dst, src, 0o755); err != nil {
		return err
	}
	return r.elfDeps(src)
}

func (r *Initramfs) elfDeps(src string) error {
	f, err := elf.Open(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			data, err := io.ReadAll(p.Open())
			if err != nil {
				return err
			}
			interp := string(bytes.TrimRight(data, "\x00"))
			if err := r.File(interp, interp, 0o755); err != nil {
				return err
			}
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("libraries of %s: %w", src, err)
	}
	for _, lib := range libs {
		path := ""
		for _, d := range libDirs {
			if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
				path = filepath.Join(d, lib)
				break
			}
		}
		if path == "" {
			return fmt.Errorf("%s needs %s, which is not installed", src, lib)
		}
		if r.files[strings.TrimPrefix(path, "/")] {
			continue
		}
		if err := r.File(path, path, 0o755); err != nil {
			return err
		}
		if err := r.elfDeps(path); err != nil {
			return err
		}
	}
	return nil
}

// Modules adds the module files (relative to k.Modules) at their paths,
// with modules.dep, so the guest can insmod them and its modprobe works.
func (r *Initramfs) Modules(k Kernel, files []string) error {
	for _, f := range files {
		if err := r.File(filepath.Join(k.Modules, f), filepath.Join(k.Modules, f), 0o644); err != nil {
			return err
		}
	}
	for _, f := range []string{"modules.dep", "modules.builtin", "modules.order", "modules.alias"} {
		if err := r.File(filepath.Join(k.Modules, f), filepath.Join(k.Modules, f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Size is the archive's content size.
func (r *Initramfs) Size() int {
	n := 0
	for _, e := range r.entries {
		n += len(e.data)
	}
	return n
}

// Write writes the archive (newc format, uncompressed: decompressing
// under TCG costs more than reading the larger file).
func (r *Initramfs) Write(path string) error {
	var b bytes.Buffer
	ino := 1
	put := func(name string, mode uint32, data []byte) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		b.WriteString(name)
		b.WriteByte(0)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.Write(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for _, e := range r.entries {
		put(e.name, e.mode, e.data)
	}
	put("TRAILER!!!", 0, nil)
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// BuildGuest builds a package of kubox's as a static Linux binary.
func BuildGuest(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if data, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, data)
	}
	return nil
}

// Boot runs the kernel with the initramfs until the guest powers off or
// ctx ends, and returns the serial console output.
func Boot(ctx context.Context, k Kernel, initramfs, appendArgs string, memMiB int) (string, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", fmt.Sprint(memMiB),
		"-kernel", k.Image, "-initrd", initramfs,
		"-append", "console=ttyS0 panic=-1 loglevel=4 "+appendArgs,
		"-nographic", "-monitor", "none", "-serial", "stdio", "-nic", "none", "-no-reboot")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("the VM did not power off in time: %w", ctx.Err())
	}
	if err != nil {
		return out.String(), fmt.Errorf("qemu: %w", err)
	}
	return out.String(), nil
}

// Line prefixes the guest uses on the console.
const (
	ResultPrefix = "KUBOX-VM "
	BenchPrefix  = "KUBOX-BENCH "
	DonePrefix   = "KUBOX-VM-DONE"
)

// Check is one result line of the guest: "KUBOX-VM PASS|FAIL name: detail".
type Check struct {
	Pass   bool
	Name   string
	Detail string
}

// Parse reads the guest's check lines, benchmark lines ("KUBOX-BENCH name
// value unit") and whether it finished.
func Parse(console string) (checks []Check, bench map[string]string, done bool) {
	bench = map[string]string{}
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, ResultPrefix):
			rest := strings.TrimPrefix(line, ResultPrefix)
			status, rest, _ := strings.Cut(rest, " ")
			name, detail, _ := strings.Cut(rest, ": ")
			if status == "PASS" || status == "FAIL" {
				checks = append(checks, Check{Pass: status == "PASS", Name: name, Detail: detail})
			}
		case strings.HasPrefix(line, BenchPrefix):
			name, value, _ := strings.Cut(strings.TrimPrefix(line, BenchPrefix), " ")
			bench[name] = value
		case strings.HasPrefix(line, DonePrefix):
			done = true
		}
	}
	return checks, bench, done
}

// GuestPackage is the guest program the IPVS VM runs.
const GuestPackage = "github.com/kubox/kubox/test/vm/guest"

// IPVSModules are the modules the guest loads: IPVS with the schedulers
// the tests use, what the ipvs proxier's ipsets and iptables rules need,
// and the link types of the test network.
var IPVSModules = []string{
	"ip_vs", "ip_vs_rr", "ip_vs_sh", "nf_conntrack", "nf_nat",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip", "ip_set_hash_ipportnet",
	"ip_set_hash_net", "ip_set_bitmap_port", "xt_set",
	"ip_tables", "iptable_nat", "iptable_filter", "iptable_mangle", "xt_comment", "xt_mark", "xt_MASQUERADE",
	"xt_addrtype", "xt_conntrack", "xt_nat", "xt_tcpudp", "xt_multiport", "ipt_REJECT",
	"dummy", "veth",
}

const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
while read m; do insmod "$m" || echo "KUBOX-VM FAIL insmod: $m"; done < /modules.load
echo "KUBOX-VM-BOOTED $(cat /proc/uptime)"
/kubox-guest
poweroff -f
`

// BuildIPVSImage builds the guest and an initramfs for it in dir, and
// returns the kernel to boot it with and the initramfs path.
func BuildIPVSImage(ctx context.Context, dir string) (Kernel, string, error) {
	k, err := FindKernel()
	if err != nil {
		return k, "", err
	}
	busybox := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if f, err := elf.Open(p); err == nil {
			static := true
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					static = false
				}
			}
			f.Close()
			if static {
				busybox = p
				break
			}
		}
	}
	if busybox == "" {
		return k, "", errors.New("no static busybox: apt-get install busybox-static")
	}
	for _, tool := range []string{"/usr/sbin/ipset", "/usr/sbin/xtables-legacy-multi"} {
		if _, err := os.Stat(tool); err != nil {
			return k, "", fmt.Errorf("%s is missing: apt-get install ipset iptables", tool)
		}
	}
	guest := filepath.Join(dir, "kubox-guest")
	if err := BuildGuest(ctx, GuestPackage, guest); err != nil {
		return k, "", err
	}
	img := NewInitramfs()
	if err := img.File("/bin/busybox", busybox, 0o755); err != nil {
		return k, "", err
	}
	img.Bytes("/init", []byte(initScript), 0o755)
	if err := img.File("/kubox-guest", guest, 0o755); err != nil {
		return k, "", err
	}
	mods, err := k.ModuleClosure(IPVSModules)
	if err != nil {
		return k, "", err
	}
	if err := img.Modules(k, mods); err != nil {
		return k, "", err
	}
	var load []string
	for _, m := range mods {
		load = append(load, filepath.Join(k.Modules, m))
	}
	img.Bytes("/modules.load", []byte(strings.Join(load, "\n")+"\n"), 0o644)
	if err := img.ELF("/usr/sbin/ipset", "/usr/sbin/ipset"); err != nil {
		return k, "", err
	}
	// iptables-legacy: the ipvs proxier drives iptables, and the legacy
	// backend needs only the ip_tables modules.
	if err := img.ELF("/usr/sbin/xtables-legacy-multi", "/usr/sbin/xtables-legacy-multi"); err != nil {
		return k, "", err
	}
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		img.Symlink("/usr/sbin/"+n, "xtables-legacy-multi")
	}
	exts, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	if len(exts) == 0 {
		return k, "", errors.New("no iptables extensions under /usr/lib/x86_64-linux-gnu/xtables: apt-get install iptables")
	}
	for _, e := range exts {
		if err := img.ELF(e, e); err != nil {
			return k, "", err
		}
	}
	for _, f := range []string{"/etc/protocols", "/etc/services"} {
		if _, err := os.Stat(f); err == nil {
			if err := img.File(f, f, 0o644); err != nil {
				return k, "", err
			}
		}
	}
	out := filepath.Join(dir, "initramfs.cpio")
	if err := img.Write(out); err != nil {
		return k, "", err
	}
	return k, out, nil
}
