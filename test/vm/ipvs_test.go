package vm

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireVM skips when qemu or a Debian kernel is missing, except in CI
// (which installs them), where that is a failure.
func requireVM(t *testing.T) {
	t.Helper()
	_, qerr := exec.LookPath("qemu-system-x86_64")
	_, kerr := FindKernel()
	if qerr == nil && kerr == nil {
		return
	}
	msg := "the IPVS VM test needs qemu-system-x86 and linux-image-amd64 (apt-get install qemu-system-x86 linux-image-amd64)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestIPVSInVM runs kubox's service proxy in IPVS mode on Debian's kernel
// under qemu: the guest checks the kernel's IPVS table (virtual servers,
// real servers, scheduler, persistence for ClientIP affinity), sends real
// TCP traffic to ClusterIPs and a NodePort answered by backends in network
// namespaces, follows an endpoint change and a Service deletion, and checks
// that a stop with cleanup leaves nothing. Every check the guest prints must
// pass.
func TestIPVSInVM(t *testing.T) {
	requireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	begin := time.Now()
	k, initramfs, err := BuildIPVSImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(initramfs)
	t.Logf("kernel %s, initramfs %d MiB, built in %s", k.Release, fi.Size()>>20, time.Since(begin).Round(time.Millisecond))
	begin = time.Now()
	console, err := Boot(ctx, k, initramfs, "kubox.test=ipvs", 1024)
	t.Logf("VM ran %s (TCG emulation)", time.Since(begin).Round(time.Millisecond))
	checks, _, done := Parse(console)
	if err != nil || !done || len(checks) == 0 {
		t.Fatalf("VM: %v (finished: %v); console:\n%s", err, done, console)
	}
	want := []string{"mode-auto", "ready", "ipvs-clusterip", "ipvs-nodeport", "ipvs-affinity-persistence", "kube-ipvs0",
		"ipset-cluster-ip", "traffic-clusterip-from-node", "traffic-clusterip-from-pod", "traffic-nodeport", "traffic-affinity",
		"endpoint-removed", "traffic-after-endpoint-removed", "service-deleted", "stop", "cleanup",
		"ipvs-scheduler-sh", "traffic-sh", "stop-sh", "cleanup-sh"}
	got := map[string]bool{}
	failed := false
	for _, c := range checks {
		got[c.Name] = true
		if c.Pass {
			t.Logf("PASS %s: %s", c.Name, c.Detail)
		} else {
			failed = true
			t.Errorf("FAIL %s: %s", c.Name, c.Detail)
		}
	}
	for _, w := range want {
		if !got[w] {
			failed = true
			t.Errorf("the guest did not report check %s", w)
		}
	}
	if failed {
		var tail []string
		for _, l := range strings.Split(console, "\n") {
			if !strings.HasPrefix(l, "KUBOX-VM ") {
				tail = append(tail, l)
			}
		}
		if len(tail) > 150 {
			tail = tail[len(tail)-150:]
		}
		t.Logf("console (other lines, last 150):\n%s", strings.Join(tail, "\n"))
	}
}
