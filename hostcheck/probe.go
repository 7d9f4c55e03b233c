package hostcheck

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ProbeKernel tries what the pod network needs for real, in a network
// namespace of its own that disappears with the probe: it creates a bridge,
// a veth pair and a vxlan link, and (with the nft tool at nftPath) an
// nftables table. The host's links and rules are never touched. Keys are
// "bridge", "veth", "vxlan" and "nf_tables"; a missing key means the probe
// could not run (not root), and the caller falls back to /sys/module.
func ProbeKernel(nftPath string) map[string]error {
	out := map[string]error{}
	if os.Geteuid() != 0 {
		return out
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread enters a new network namespace and is never unlocked,
		// so the Go runtime discards it (and the namespace) when this
		// goroutine ends: no other goroutine ever runs in it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "kbxprobe-br"
		out["bridge"] = linkAdd(&netlink.Bridge{LinkAttrs: la})
		va := netlink.NewLinkAttrs()
		va.Name = "kbxprobe-v0"
		out["veth"] = linkAdd(&netlink.Veth{LinkAttrs: va, PeerName: "kbxprobe-v1"})
		xa := netlink.NewLinkAttrs()
		xa.Name = "kbxprobe-vx"
		out["vxlan"] = linkAdd(&netlink.Vxlan{LinkAttrs: xa, VxlanId: 42, Port: 4789})
		if nftPath != "" {
			// Started from this locked thread, the child inherits its
			// network namespace.
			cmd := exec.Command(nftPath, "-f", "-")
			cmd.Stdin = strings.NewReader("table inet kubox_check {\n\tchain c {\n\t\ttype filter hook forward priority 0;\n\t}\n}\n")
			if b, err := cmd.CombinedOutput(); err != nil {
				out["nf_tables"] = fmt.Errorf("nft: %s", strings.TrimSpace(string(b)))
			} else {
				out["nf_tables"] = nil
			}
		}
	}()
	<-done
	return out
}

func linkAdd(l netlink.Link) error {
	err := netlink.LinkAdd(l)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("the kernel does not know the link type %q", l.Type())
	}
	return err
}
