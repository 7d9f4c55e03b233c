package mode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func allSchedulers(v bool) map[string]bool {
	m := map[string]bool{}
	for _, s := range Schedulers {
		m[s] = v
	}
	return m
}

func TestSelect(t *testing.T) {
	full := Host{IPVS: true, Schedulers: allSchedulers(true), NFT: true, IPTables: true, IPSet: true}
	noIPVS := Host{Schedulers: allSchedulers(false), NFT: true, IPTables: true, IPSet: true}
	noSH := full
	noSH.Schedulers = allSchedulers(true)
	noSH.Schedulers["sh"] = false
	noIPSet := full
	noIPSet.IPSet = false
	bare := Host{IPTables: true}
	nothing := Host{}

	for _, tc := range []struct {
		name      string
		req       Mode
		sched     string
		host      Host
		want      Mode
		reason    string // substring of the reason, or of the error
		wantError bool
	}{
		{"auto with ip_vs", Auto, "", full, IPVS, "/proc/net/ip_vs present, with the rr scheduler", false},
		{"auto without ip_vs", Auto, "", noIPVS, NFTables, "kernel has no ip_vs", false},
		{"auto, ip_vs without the scheduler", Auto, "sh", noSH, NFTables, "not its sh scheduler", false},
		{"auto, ip_vs with another scheduler", Auto, "rr", noSH, IPVS, "rr scheduler", false},
		{"auto, ip_vs without ipset", Auto, "", noIPSet, NFTables, "ipset tool is not installed", false},
		{"auto without nft", Auto, "", bare, IPTables, "nft tool is not installed", false},
		{"auto with nothing", Auto, "", nothing, "", "no service proxy mode works here", true},
		{"forced ipvs", IPVS, "wrr", full, IPVS, "forced", false},
		{"forced ipvs without ip_vs", IPVS, "", noIPVS, "", "proxy mode ipvs: kernel has no ip_vs", true},
		{"forced ipvs without scheduler", IPVS, "sh", noSH, "", "ip_vs_sh", true},
		{"forced nftables on an ipvs host", NFTables, "", full, NFTables, "forced", false},
		{"forced nftables without nft", NFTables, "", bare, "", "nft tool is not installed", true},
		{"forced iptables", IPTables, "", noIPVS, IPTables, "forced", false},
		{"forced iptables without iptables", IPTables, "", nothing, "", "iptables-restore is not installed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Select(tc.req, tc.sched, tc.host)
			if tc.wantError {
				if err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("got %v, %v; want error containing %q", c, err, tc.reason)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil || c.Mode != tc.want || !strings.Contains(c.Reason, tc.reason) {
				t.Fatalf("got %v, %v; want %s with reason containing %q", c, err, tc.want, tc.reason)
			}
			if !strings.HasPrefix(c.String(), string(tc.want)+": ") {
				t.Errorf("String() = %q", c)
			}
		})
	}
}

func TestParseAndScheduler(t *testing.T) {
	for in, want := range map[string]Mode{"": Auto, "auto": Auto, "IPVS": IPVS, " nftables": NFTables, "iptables": IPTables} {
		if m, err := Parse(in); err != nil || m != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, m, err, want)
		}
	}
	for _, bad := range []string{"userspace", "kernelspace", "ebpf"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), "--proxy-mode") {
			t.Errorf("Parse(%q): %v", bad, err)
		}
	}
	for _, s := range append([]string{""}, Schedulers...) {
		if err := CheckScheduler(s); err != nil {
			t.Errorf("CheckScheduler(%q): %v", s, err)
		}
	}
	for _, bad := range []string{"RR", "mh", "lblc", "round-robin"} {
		if err := CheckScheduler(bad); err == nil || !strings.Contains(err.Error(), "--ipvs-scheduler") {
			t.Errorf("CheckScheduler(%q): %v", bad, err)
		}
	}
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDetect(t *testing.T) {
	tools := func(have ...string) func(string) (string, error) {
		return func(name string) (string, error) {
			for _, h := range have {
				if h == name {
					return "/usr/sbin/" + name, nil
				}
			}
			return "", errors.New("not found")
		}
	}
	t.Run("no ip_vs, no module loading", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, map[string]string{
			"proc/sys/kernel/osrelease": "6.18.0\n",
			"mods/modules.dep":          "kernel/net/netfilter/ipvs/ip_vs_rr.ko: kernel/net/netfilter/ipvs/ip_vs.ko\n",
		})
		h := Detect(Probe{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), ModulesDir: filepath.Join(root, "mods"), LookPath: tools("nft")})
		if h.IPVS || h.Schedulers["rr"] || !h.NFT || h.IPSet || h.IPTables {
			t.Fatalf("%+v", h)
		}
		if c, err := Select(Auto, "", h); err != nil || c.String() != "nftables: kernel has no ip_vs" {
			t.Fatalf("%v %v", c, err)
		}
	})
	t.Run("ip_vs loaded, schedulers loaded, built in or loadable", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, map[string]string{
			"proc/sys/kernel/osrelease":        "6.1.0-56-amd64\n",
			"proc/net/ip_vs":                   "IP Virtual Server version 1.2.1 (size=4096)\n",
			"proc/modules":                     "ip_vs 200704 0 - Live 0x0\n",
			"proc/sys/kernel/modules_disabled": "0\n",
			"sys/module/ip_vs_rr/refcnt":       "0\n",
			"mods/modules.builtin":             "kernel/net/netfilter/ipvs/ip_vs_lc.ko\n",
			"mods/modules.dep":                 "kernel/net/netfilter/ipvs/ip_vs_sh.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko.xz\n",
		})
		h := Detect(Probe{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), ModulesDir: filepath.Join(root, "mods"), LookPath: tools("nft", "ipset", "iptables-restore")})
		for s, want := range map[string]bool{"rr": true, "lc": true, "sh": true, "wrr": false} {
			if h.Schedulers[s] != want {
				t.Errorf("scheduler %s: %v, want %v", s, h.Schedulers[s], want)
			}
		}
		if c, err := Select(Auto, "sh", h); err != nil || c.Mode != IPVS {
			t.Fatalf("%v %v", c, err)
		}
		if c, err := Select(Auto, "wrr", h); err != nil || c.Mode != NFTables {
			t.Fatalf("%v %v", c, err)
		}
		// Module loading switched off: a module file no longer counts.
		write(t, root, map[string]string{"proc/sys/kernel/modules_disabled": "1\n"})
		h = Detect(Probe{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), ModulesDir: filepath.Join(root, "mods"), LookPath: tools("nft", "ipset", "iptables-restore")})
		if h.Schedulers["sh"] || !h.Schedulers["rr"] || !h.Schedulers["lc"] {
			t.Errorf("modules disabled: %+v", h.Schedulers)
		}
	})
}
