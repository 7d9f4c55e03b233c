// Package vm holds tests that boot a real Linux with systemd as PID 1 in
// qemu (TCG: this host has no KVM), since the host itself runs without
// systemd. They are slow and run with `make test-vm` only.
package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSystemdInstall boots Debian 12 (Debian's kernel, a debootstrapped root
// with systemd), installs kubox offline with install.sh, and lets
// guest/vm-test.sh check the service's life: READY only once the node is
// registered, a restart that keeps and adopts the pods' containers, the
// watchdog, and an uninstall that leaves nothing behind.
func TestSystemdInstall(t *testing.T) {
	env := require(t)
	work := t.TempDir()
	stage := filepath.Join(work, "root")
	begin := time.Now()
	run(t, "cp", "-a", env.rootfs, stage)
	dist := filepath.Join(stage, "root", "kubox-dist")
	must(t, os.MkdirAll(dist, 0o755))
	copyFile(t, env.kubox, filepath.Join(dist, "kubox"), 0o755)
	copyFile(t, filepath.Join(env.repo, "systemd", "install.sh"), filepath.Join(dist, "install.sh"), 0o755)
	copyFile(t, filepath.Join(env.images, "busybox.tar"), filepath.Join(stage, "root", "busybox.tar"), 0o644)
	copyFile(t, filepath.Join(env.repo, "test", "vm", "systemd-guest", "vm-test.sh"), filepath.Join(stage, "usr", "local", "sbin", "vm-test.sh"), 0o755)
	copyFile(t, filepath.Join(env.repo, "test", "vm", "systemd-guest", "kubox-vm-test.service"), filepath.Join(stage, "etc", "systemd", "system", "kubox-vm-test.service"), 0o644)
	copyFile(t, filepath.Join(env.repo, "test", "vm", "systemd-guest", "eth.network"), filepath.Join(stage, "etc", "systemd", "network", "eth.network"), 0o644)
	for _, l := range []struct{ link, target string }{
		{"etc/systemd/system/multi-user.target.wants/kubox-vm-test.service", "/etc/systemd/system/kubox-vm-test.service"},
		{"etc/systemd/system/multi-user.target.wants/systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"},
		// The serial console is the test's output, not a login prompt.
		{"etc/systemd/system/serial-getty@ttyS0.service", "/dev/null"},
	} {
		p := filepath.Join(stage, l.link)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.Symlink(l.target, p))
	}
	must(t, os.WriteFile(filepath.Join(stage, "etc", "hostname"), []byte("kubox-vm\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(stage, "etc", "hosts"), []byte("127.0.0.1 localhost\n10.0.2.15 kubox-vm\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(stage, "etc", "fstab"), []byte("/dev/vda / ext4 rw,errors=remount-ro 0 1\n"), 0o644))
	copyModules(t, env.kernelVersion, stage)

	img := filepath.Join(work, "disk.img")
	run(t, "mkfs.ext4", "-q", "-F", "-L", "root", "-d", stage, img, "6G")
	must(t, os.RemoveAll(stage))
	t.Logf("image ready in %s", time.Since(begin).Round(time.Second))

	// Kept after the test (hack/out is not committed) for a look at a failure.
	serial := filepath.Join(filepath.Dir(env.rootfs), "serial.log")
	_ = os.Remove(serial)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "4096",
		"-kernel", env.kernel, "-initrd", env.initrd,
		"-append", "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0 quiet",
		"-drive", "file="+img+",format=raw,if=virtio",
		// User-mode networking, restricted: the guest has an interface and a
		// default route (kubox picks its node IP from it) but no traffic
		// leaves the VM.
		"-nic", "user,model=virtio-net-pci,restrict=on",
		"-display", "none", "-serial", "file:"+serial, "-monitor", "none",
		"-no-reboot")
	qemu.Stdout, qemu.Stderr = os.Stderr, os.Stderr
	boot := time.Now()
	must(t, qemu.Start())
	stopTail := tail(t, serial, boot)
	err := qemu.Wait()
	stopTail()
	t.Logf("VM ran for %s (qemu: %v)", time.Since(boot).Round(time.Second), err)

	out, rerr := os.ReadFile(serial)
	must(t, rerr)
	checks, done := 0, false
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		if i := strings.Index(line, "VMTEST CHECK "); i >= 0 {
			checks++
			f := strings.Fields(line[i+len("VMTEST CHECK "):])
			if len(f) < 2 || f[1] != "ok" {
				t.Errorf("in the VM: %s", line[i:])
			}
		}
		if strings.Contains(line, "VMTEST DONE") {
			done = true
		}
	}
	if !done {
		t.Fatalf("the VM test did not finish (%d checks seen); serial log: %s", checks, serial)
	}
	if checks < 20 {
		t.Fatalf("only %d checks ran", checks)
	}
}

type vmEnv struct {
	repo, kubox, images, rootfs   string
	kernel, initrd, kernelVersion string
}

func require(t *testing.T) vmEnv {
	t.Helper()
	if os.Getenv("KUBOX_TEST_VM") == "" {
		t.Skip("set KUBOX_TEST_VM=1 (make test-vm) to boot the systemd VM; it takes many minutes under TCG")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (debootstrap, mkfs)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "debootstrap", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: apt-get install qemu-system-x86 e2fsprogs debootstrap kmod", tool)
		}
	}
	e := vmEnv{kubox: os.Getenv("KUBOX_BIN"), images: os.Getenv("KUBOX_TEST_IMAGES")}
	if e.kubox == "" || e.images == "" {
		t.Fatal("KUBOX_BIN and KUBOX_TEST_IMAGES must be set (make test-vm sets them)")
	}
	repo, err := filepath.Abs("../..")
	must(t, err)
	e.repo = repo
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Skip("no /boot/vmlinuz-*: apt-get install linux-image-amd64")
	}
	e.kernel = kernels[len(kernels)-1]
	e.kernelVersion = strings.TrimPrefix(filepath.Base(e.kernel), "vmlinuz-")
	e.initrd = "/boot/initrd.img-" + e.kernelVersion
	if _, err := os.Stat(e.initrd); err != nil {
		t.Skipf("no %s for %s", e.initrd, e.kernel)
	}
	e.rootfs = filepath.Join(repo, "hack", "out", "vm", "rootfs")
	cmd := exec.Command(filepath.Join(repo, "hack", "vm", "mkrootfs.sh"), e.rootfs)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build the VM's root file system: %v", err)
	}
	return e
}

// copyModules puts the kernel's modules for networking, file systems and
// netfilter into the image (not GPU, sound or wireless drivers).
func copyModules(t *testing.T, version, stage string) {
	t.Helper()
	src := "/lib/modules/" + version
	dst := filepath.Join(stage, "lib", "modules", version)
	must(t, os.MkdirAll(filepath.Join(dst, "kernel", "drivers"), 0o755))
	for _, d := range []string{"kernel/net", "kernel/fs", "kernel/lib", "kernel/crypto", "kernel/arch", "kernel/block", "kernel/drivers/net"} {
		if _, err := os.Stat(filepath.Join(src, d)); err == nil {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(dst, d)), 0o755))
			run(t, "cp", "-a", filepath.Join(src, d), filepath.Join(dst, d))
		}
	}
	files, _ := filepath.Glob(filepath.Join(src, "modules.*"))
	for _, f := range files {
		run(t, "cp", "-a", f, dst)
	}
	run(t, "depmod", "-b", stage, version)
}

// tail copies the serial console's VMTEST lines to the test log as they come.
func tail(t *testing.T, path string, since time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var f *os.File
		for f == nil {
			if ff, err := os.Open(path); err == nil {
				f = ff
				break
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		defer f.Close()
		r := bufio.NewReader(f)
		var partial string
		for {
			line, err := r.ReadString('\n')
			partial += line
			if err == io.EOF {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
					continue
				}
			}
			if strings.Contains(partial, "VMTEST") {
				fmt.Fprintf(os.Stderr, "[%4.0fs] %s", time.Since(since).Seconds(), partial[strings.Index(partial, "VMTEST"):])
			}
			partial = ""
		}
	}()
	return func() { close(stop); <-done }
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	run(t, "cp", src, dst)
	must(t, os.Chmod(dst, mode))
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
