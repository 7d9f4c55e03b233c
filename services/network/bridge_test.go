package network

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inThrowawayNetns runs f on this goroutine's thread inside a new network
// namespace, so the host's links are never touched.
func inThrowawayNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Fatalf("back to the original netns: %v", err)
		}
	}()
	f()
}

func addBridge(t *testing.T, name, cidr string) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(br, addr); err != nil {
		t.Fatalf("add address: %v", err)
	}
}

func TestDropStaleBridge(t *testing.T) {
	inThrowawayNetns(t, func() {
		if dropped, err := dropStaleBridge("kubox0", "10.42.1.0/24"); err != nil || dropped {
			t.Fatalf("no bridge: dropped %v err %v", dropped, err)
		}
		addBridge(t, "kubox0", "10.42.1.1/24")
		if dropped, err := dropStaleBridge("kubox0", "10.42.1.0/24"); err != nil || dropped {
			t.Fatalf("bridge on the current CIDR: dropped %v err %v", dropped, err)
		}
		if dropped, err := dropStaleBridge("kubox0", "10.42.7.0/24"); err != nil || !dropped {
			t.Fatalf("bridge on an old CIDR: dropped %v err %v", dropped, err)
		}
		if _, err := netlink.LinkByName("kubox0"); err == nil {
			t.Fatal("stale bridge still there")
		}
	})
}
