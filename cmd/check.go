package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/hostcheck"
	"github.com/kubox/kubox/server"
)

// serverRunning reports whether a kubox server holds the data dir's lock
// file (server.Paths.Lock). It never creates the lock file.
func serverRunning(lock string) bool {
	fd, err := unix.Open(lock, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(fd, unix.LOCK_UN)
	return false
}

// errChecksFailed makes the command exit non-zero after it printed why.
type errChecksFailed struct{ msg string }

func (e errChecksFailed) Error() string { return e.msg }

func newCheckCommand() *cobra.Command {
	var procRoot, sysRoot string
	var opts *serverOpts
	var out *output
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this host can run kubox: kernel, cgroups, network, ports, disk, memory, clock, certificates",
		Long: `Check that this host can run kubox, before installing it or at any time.

Each line says OK, WARN or FAIL, with a hint on how to fix it. The exit code
is non-zero when any check FAILs. Nothing on the host is changed: link types
and nftables are tried in a throwaway network namespace.

Ports and the data dir come from the flags, else from the config file
` + server.DefaultConfigFile + ` (the keys of "kubox server").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := opts.load(cmd)
			if err != nil {
				return err
			}
			c := f.cfg
			if f.nodeIP != "" {
				if c.NodeIP = net.ParseIP(f.nodeIP).To4(); c.NodeIP == nil {
					return fmt.Errorf("--node-ip %q: not an IPv4 address", f.nodeIP)
				}
			} else if ip, err := server.DefaultNodeIP(); err == nil {
				// The address kubox server would take, so the etcd peer and
				// DNS ports are tried where the server listens.
				c.NodeIP = ip
			}
			paths := c.Paths()
			snapDir := c.SnapshotDir
			if snapDir == "" {
				snapDir = backup.DefaultDir(c.DataDir)
			}
			results := hostcheck.Run(hostcheck.Config{
				ProcRoot: procRoot, SysRoot: sysRoot, DataDir: c.DataDir, SnapshotDir: snapDir,
				Ports:          checkPorts(c.Ports()),
				ServerRunning:  serverRunning(paths.Lock),
				CapSysResource: server.HasCapSysResource,
				ProxyMode:      c.Proxy.Mode, IPVSScheduler: c.Proxy.IPVSScheduler,
			})
			results = append(results, certExpiryCheck(paths.PKI))
			if r, ok := etcdSpaceCheck(cmd.Context(), c, serverRunning(paths.Lock)); ok {
				results = append(results, r)
			}
			if err := out.Print(cmd.OutOrStdout(), results, func(w io.Writer) error {
				printChecks(w, results)
				return nil
			}); err != nil {
				return err
			}
			if hostcheck.Failed(results) {
				n := 0
				for _, r := range results {
					if r.Status == hostcheck.Fail {
						n++
					}
				}
				return errChecksFailed{strconv.Itoa(n) + " check(s) failed: fix the FAIL lines above and run kubox check again"}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	opts = addServerOpts(fl,
		sharedFlag{name: "data-dir", usage: "kubox data dir"},
		sharedFlag{name: "snapshot-dir", usage: "snapshot dir (default <data-dir>/snapshots): checked for space when on another disk"},
		sharedFlag{name: "https-port", usage: "apiserver port"},
		sharedFlag{name: "etcd-client-port", usage: "etcd client port (on 127.0.0.1)"},
		sharedFlag{name: "etcd-peer-port", usage: "etcd peer port (on --node-ip)"},
		sharedFlag{name: "kubelet-port", usage: "kubelet API port"},
		sharedFlag{name: "dns-port", usage: "cluster DNS port (on --node-ip)"},
		sharedFlag{name: "node-ip", usage: "this node's IPv4 address (default: the address of the default route's interface)"},
		sharedFlag{name: "disable-agent", usage: "control plane only: the kubelet port is not needed"},
		sharedFlag{name: "disable-dns", usage: "no cluster DNS: the DNS port is not needed"},
		sharedFlag{name: "proxy-mode", usage: "service proxy mode to check for: auto, ipvs, nftables or iptables"},
		sharedFlag{name: "ipvs-scheduler", usage: "IPVS scheduler to check for"},
		sharedFlag{name: "etcd-quota-bytes", usage: "etcd's quota, which a stopped server's database file is checked against"},
	)
	out = addOutputFlag(cmd, "output format: json, or nothing for a table")
	// For tests: fake /proc and /sys trees.
	fl.StringVar(&procRoot, "proc-root", "/proc", "where /proc is")
	fl.StringVar(&sysRoot, "sys-root", "/sys", "where /sys is")
	_ = fl.MarkHidden("proc-root")
	_ = fl.MarkHidden("sys-root")
	return cmd
}

// etcdSpaceCheck asks the running etcd member for its size, or, with kubox
// server stopped, looks at the database file; false when there is none yet.
func etcdSpaceCheck(ctx context.Context, c server.Config, running bool) (hostcheck.Result, bool) {
	if running {
		quietGRPC()
		a := &server.Admin{DataDir: c.DataDir, EtcdClientPort: c.EtcdClientPort}
		u, nospace, err := a.LocalEtcdSpace(ctx)
		if err != nil {
			return hostcheck.EtcdSpaceCheck(hostcheck.EtcdSpace{Err: err.Error()}), true
		}
		return hostcheck.EtcdSpaceCheck(hostcheck.EtcdSpace{Size: u.Size, Quota: u.Quota, NoSpace: nospace}), true
	}
	fi, err := os.Stat(filepath.Join(c.Paths().Etcd, "member", "snap", "db"))
	if err != nil {
		return hostcheck.Result{}, false
	}
	return hostcheck.EtcdSpaceCheck(hostcheck.EtcdSpace{Size: fi.Size(), Quota: c.EtcdQuotaBytes, FromFile: true}), true
}

// checkPorts gives hostcheck the ports kubox server would listen on.
func checkPorts(ps []server.Port) []hostcheck.Port {
	out := make([]hostcheck.Port, len(ps))
	for i, p := range ps {
		out[i] = hostcheck.Port{Host: p.Host, Port: p.Port, What: p.What, Flag: p.Flag}
	}
	return out
}

func printChecks(w io.Writer, rs []hostcheck.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Status, r.Name, r.Message)
		if r.Fix != "" && r.Status != hostcheck.OK {
			fmt.Fprintf(tw, "\t\t  fix: %s\n", r.Fix)
		}
	}
	tw.Flush()
}
