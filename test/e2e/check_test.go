package e2e

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/kubox/kubox/test/harness"
)

type checkLine struct {
	Name, Status, Message, Fix string
}

// TestCheck runs `kubox check` on this machine and asserts what is true
// here: no ip_vs (so the nftables proxy mode), hybrid cgroups, nftables
// working, the link types there; then that a taken port is a FAIL with a
// non-zero exit.
func TestCheck(t *testing.T) {
	env := harness.Require(t)
	n := harness.NewNode(t, env) // takes the host lock: no other test's server holds the ports
	out, errOut, code := kubox(t, env, "check", "-o", "json", "--data-dir", n.DataDir)
	var lines []checkLine
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatalf("check -o json does not parse: %v\n%s\n%s", err, out, errOut)
	}
	if code != 0 {
		t.Fatalf("check exit %d on this host:\n%s\n%s", code, out, errOut)
	}
	m := map[string]checkLine{}
	for _, l := range lines {
		m[l.Name] = l
		t.Logf("%-5s %-16s %s", l.Status, l.Name, l.Message)
		if l.Status != "OK" && l.Status != "WARN" && l.Status != "FAIL" {
			t.Errorf("%s: status %q", l.Name, l.Status)
		}
		if l.Status != "OK" && l.Fix == "" {
			t.Errorf("%s: %s without a fix hint", l.Name, l.Status)
		}
	}
	expect := func(name, status, msgPrefix string) {
		t.Helper()
		l, ok := m[name]
		if !ok {
			t.Errorf("no %q line", name)
			return
		}
		if l.Status != status || !strings.HasPrefix(l.Message, msgPrefix) {
			t.Errorf("%s: %s %q, want %s %q...", name, l.Status, l.Message, status, msgPrefix)
		}
	}
	expect("ip_vs", "OK", "not present")
	expect("proxy mode", "OK", "nftables")
	expect("cgroups", "WARN", "hybrid")
	expect("nftables", "OK", "nft tool at")
	expect("overlayfs", "OK", "available")
	for _, k := range []string{"bridge", "veth", "vxlan"} {
		expect(k, "OK", "works")
	}
	for _, p := range []string{"6443", "2379", "2380", "10250"} {
		expect("port "+p, "OK", "free")
	}
	expect("swap", "OK", "off")
	expect("certificates", "OK", "no PKI yet")
	for _, name := range []string{"kernel", "memory", "data dir", "clock sync", "CAP_SYS_RESOURCE"} {
		if _, ok := m[name]; !ok {
			t.Errorf("no %q line", name)
		}
	}
	if out, _, _ := kubox(t, env, "check", "--data-dir", n.DataDir); !strings.Contains(out, "proxy mode") || !strings.Contains(out, "fix:") {
		t.Errorf("table output:\n%s", out)
	}

	// A port something else holds: FAIL, with the flag to change, exit 1.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	out, errOut, code = kubox(t, env, "check", "-o", "json", "--data-dir", n.DataDir, "--etcd-client-port", port)
	if code == 0 {
		t.Fatalf("check with port %s taken: exit 0\n%s", port, out)
	}
	lines = nil
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatalf("JSON on failure does not parse: %v", err)
	}
	found := false
	for _, l := range lines {
		if l.Name == "port "+port {
			found = l.Status == "FAIL" && strings.Contains(l.Fix, "--etcd-client-port")
		}
	}
	if !found || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("port %s: FAIL line with fix %v; stderr %q", port, found, errOut)
	}
}
