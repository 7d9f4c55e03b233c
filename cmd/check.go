package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/kubox/kubox/hostcheck"
	"github.com/kubox/kubox/internal/configfile"
	"github.com/kubox/kubox/server"
)

// loadServerFlags reads `kubox server`'s flags as a verb sees them: the
// verb's own flags named in shared (given on the command line) win over the
// config file, which wins over the defaults.
func loadServerFlags(cmd *cobra.Command, configFile string, shared ...string) (*serverFlags, error) {
	f := newServerFlags()
	full := pflag.NewFlagSet("server", pflag.ContinueOnError)
	f.register(full)
	for _, name := range shared {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			if err := full.Set(name, fl.Value.String()); err != nil {
				return nil, fmt.Errorf("--%s: %w", name, err)
			}
		}
	}
	if err := configfile.Apply(full, configFile, cmd.Flags().Changed("config")); err != nil {
		return nil, err
	}
	dd, err := filepath.Abs(f.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %q: %w", f.cfg.DataDir, err)
	}
	f.cfg.DataDir = dd
	return f, nil
}

// serverRunning reports whether a kubox server holds dataDir's lock. It
// never creates the lock file.
func serverRunning(dataDir string) bool {
	fd, err := unix.Open(filepath.Join(dataDir, "kubox.lock"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
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
	var configFile, output, procRoot, sysRoot string
	shared := []string{"data-dir", "https-port", "etcd-client-port", "etcd-peer-port", "kubelet-port", "node-ip", "disable-agent", "proxy-mode", "ipvs-scheduler"}
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
			if err := checkOutput(output); err != nil {
				return err
			}
			f, err := loadServerFlags(cmd, configFile, shared...)
			if err != nil {
				return err
			}
			cfg := hostcheck.Config{
				ProcRoot: procRoot, SysRoot: sysRoot, DataDir: f.cfg.DataDir,
				ServerRunning:  serverRunning(f.cfg.DataDir),
				CapSysResource: server.HasCapSysResource,
				ProxyMode:      f.cfg.Proxy.Mode, IPVSScheduler: f.cfg.Proxy.IPVSScheduler,
			}
			peerHost := ""
			if f.nodeIP != "" {
				if ip := net.ParseIP(f.nodeIP).To4(); ip != nil {
					peerHost = ip.String()
				} else {
					return fmt.Errorf("--node-ip %q: not an IPv4 address", f.nodeIP)
				}
			}
			cfg.Ports = []hostcheck.Port{
				{Port: f.cfg.HTTPSPort, What: "apiserver", Flag: "--https-port"},
				{Host: "127.0.0.1", Port: f.cfg.EtcdClientPort, What: "etcd client", Flag: "--etcd-client-port"},
				{Host: peerHost, Port: f.cfg.EtcdPeerPort, What: "etcd peer", Flag: "--etcd-peer-port"},
			}
			if !f.cfg.DisableAgent {
				cfg.Ports = append(cfg.Ports, hostcheck.Port{Port: f.cfg.KubeletPort, What: "kubelet", Flag: "--kubelet-port"})
			}
			if host, port, err := net.SplitHostPort(f.cfg.MetricsAddress); err == nil {
				if n, err := strconv.Atoi(port); err == nil && n != 0 {
					cfg.Ports = append(cfg.Ports, hostcheck.Port{Host: host, Port: n, What: "kubox metrics", Flag: "--metrics-address"})
				}
			}
			results := hostcheck.Run(cfg)
			results = append(results, certExpiryCheck(filepath.Join(f.cfg.DataDir, "pki")))
			if output == "json" {
				if err := printJSON(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			} else {
				printChecks(cmd.OutOrStdout(), results)
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
	fl.StringVarP(&configFile, "config", "c", server.DefaultConfigFile, "kubox config file (YAML; the keys of 'kubox server')")
	fl.StringVarP(&output, "output", "o", "", "output format: json, or nothing for a table")
	fl.String("data-dir", "/var/lib/kubox", "kubox data dir")
	fl.Int("https-port", 6443, "apiserver port")
	fl.Int("etcd-client-port", 2379, "etcd client port (on 127.0.0.1)")
	fl.Int("etcd-peer-port", 2380, "etcd peer port (on --node-ip)")
	fl.Int("kubelet-port", 10250, "kubelet API port")
	fl.String("node-ip", "", "this node's IPv4 address")
	fl.Bool("disable-agent", false, "control plane only: the kubelet port is not needed")
	fl.String("proxy-mode", "auto", "service proxy mode to check for: auto, ipvs, nftables or iptables")
	fl.String("ipvs-scheduler", "rr", "IPVS scheduler to check for")
	// For tests: fake /proc and /sys trees.
	fl.StringVar(&procRoot, "proc-root", "/proc", "where /proc is")
	fl.StringVar(&sysRoot, "sys-root", "/sys", "where /sys is")
	_ = fl.MarkHidden("proc-root")
	_ = fl.MarkHidden("sys-root")
	return cmd
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
