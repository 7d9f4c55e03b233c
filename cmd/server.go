package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/embedded/metrics"
	"github.com/kubox/kubox/embedded/network"
	"github.com/kubox/kubox/internal/configfile"
	"github.com/kubox/kubox/server"
	"github.com/kubox/kubox/systemd"
)

const defaultConfigFile = "/etc/kubox/config.yaml"

// serverFlags are the raw values of `kubox server`'s flags; every one can also
// be a key of the config file.
type serverFlags struct {
	dataDir, runDir, writeKubeconfig, nodeName, nodeIP   string
	clusterCIDR, serviceCIDR, clusterDNS, clusterDomain  string
	httpsPort, etcdClientPort, etcdPeerPort, kubeletPort int
	disableAgent, stopPodsOnExit                         bool
	disableDNS                                           bool
	dnsPort                                              int
	dnsConfig, resolvConf                                string
	snapshot                                             snapshotServerFlags
	proxy                                                proxyServerFlags
	podNetworkBackend                                    string
	vxlanPort, vxlanVNI                                  int
	cpuManagerPolicy, reservedCPUs                       string
	systemReserved, kubeReserved                         string
	certCheckInterval, testLeafCertLifetime              time.Duration
	metricsAddress                                       string
	join, token, tokenFile                               string
	kubeletCgroupRoot                                    string
	airgap                                               airgapServerFlags
	imageGCHigh, imageGCLow                              int
	imageGCMinAge                                        time.Duration
	testEvictionHard                                     map[string]string
	testDNSReloadInterval                                time.Duration
	startTimeout                                         time.Duration
}

func (f *serverFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.dataDir, "data-dir", "/var/lib/kubox", "where kubox keeps its state (etcd, PKI, images)")
	fs.StringVar(&f.runDir, "run-dir", "/run/kubox", "where kubox keeps sockets and runtime state")
	fs.StringVar(&f.writeKubeconfig, "write-kubeconfig", defaultAdminKubeconfig, "where to write the admin kubeconfig (0600)")
	fs.StringVar(&f.nodeName, "node-name", "", "this node's name (default: the hostname, lower-cased)")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's IPv4 address (default: the address of the default route's interface)")
	fs.StringVar(&f.clusterCIDR, "cluster-cidr", "10.42.0.0/16", "pod IP range; each node gets a /24 of it")
	fs.StringVar(&f.serviceCIDR, "service-cidr", "10.43.0.0/16", "Service ClusterIP range")
	fs.StringVar(&f.clusterDNS, "cluster-dns", "", "cluster DNS Service IP (default: the 10th address of --service-cidr)")
	fs.StringVar(&f.clusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain")
	fs.IntVar(&f.httpsPort, "https-port", 6443, "apiserver port")
	fs.IntVar(&f.etcdClientPort, "etcd-client-port", 2379, "etcd client port (on 127.0.0.1)")
	fs.IntVar(&f.etcdPeerPort, "etcd-peer-port", 2380, "etcd peer port (on --node-ip)")
	fs.IntVar(&f.kubeletPort, "kubelet-port", 10250, "kubelet API port")
	fs.BoolVar(&f.disableAgent, "disable-agent", false, "run the control plane only: no containerd, kubelet or pod network")
	fs.BoolVar(&f.disableDNS, "disable-dns", false, "do not serve cluster DNS (then run a DNS server for --cluster-dns yourself)")
	fs.IntVar(&f.dnsPort, "dns-port", 53, "cluster DNS port on --node-ip (UDP and TCP)")
	fs.StringVar(&f.dnsConfig, "dns-config", "/etc/kubox/dns.conf", "extra Corefile server blocks for cluster DNS, e.g. stub zones (missing file: none)")
	fs.StringVar(&f.resolvConf, "resolv-conf", "/etc/resolv.conf", "resolv.conf whose nameservers cluster DNS forwards other names to")
	fs.BoolVar(&f.stopPodsOnExit, "stop-pods-on-exit", true, "stop every pod when kubox stops, so no container outlives it")
	fs.StringVar(&f.join, "join", "", "join the cluster of the box whose apiserver is at this URL, e.g. https://10.0.0.1:6443 (with --token)")
	fs.StringVar(&f.token, "token", "", "join token from `kubox token create` (also --token-file or $KUBOX_TOKEN, which keep it out of the process list)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the join token")
	fs.StringVar(&f.kubeletCgroupRoot, "kubelet-cgroup-root", "", "for tests running several boxes on one machine: the cgroup under which this box's pod cgroups go")
	_ = fs.MarkHidden("kubelet-cgroup-root")
	fs.DurationVar(&f.startTimeout, "start-timeout", server.StartTimeout, "give up (and exit) when the node is not ready within this time")
	f.snapshot.register(fs)
	f.proxy.register(fs)
	fs.StringVar(&f.podNetworkBackend, "pod-network-backend", "auto", "how pod traffic reaches other boxes: auto (a host route where the box is on a shared subnet, VXLAN otherwise), host-gw or vxlan")
	fs.IntVar(&f.vxlanPort, "vxlan-port", network.DefaultVXLANPort, "UDP port of the pod network's VXLAN overlay (the same on every box)")
	fs.IntVar(&f.vxlanVNI, "vxlan-vni", network.DefaultVXLANVNI, "VXLAN network identifier of the pod network's overlay (the same on every box)")
	fs.StringVar(&f.cpuManagerPolicy, "cpu-manager-policy", kubelet.CPUManagerNone, "kubelet CPU manager policy: none, or static (Guaranteed pods with whole CPUs get exclusive CPUs)")
	fs.StringVar(&f.reservedCPUs, "reserved-cpus", "", "CPUs kept for the system and kubox, e.g. 0 or 0-1 (overrides the cpu of --system-reserved and --kube-reserved)")
	fs.StringVar(&f.systemReserved, "system-reserved", "cpu=100m,memory=256Mi", "resources kept for the OS (name=quantity,...; none for nothing)")
	fs.StringVar(&f.kubeReserved, "kube-reserved", "cpu=100m,memory=256Mi", "resources kept for kubox itself (name=quantity,...; none for nothing)")
	fs.DurationVar(&f.certCheckInterval, "cert-check-interval", server.DefaultCertCheckInterval, "how often to look for certificates to renew (also at start)")
	fs.DurationVar(&f.testLeafCertLifetime, "test-leaf-cert-lifetime", 0, "for tests: lifetime of newly issued leaf certificates (default one year)")
	_ = fs.MarkHidden("test-leaf-cert-lifetime")
	fs.StringVar(&f.metricsAddress, "metrics-address", metrics.DefaultAddress, "host:port of kubox's metrics endpoint (HTTPS, client certificate from the cluster's client CA required); none turns it off")
	f.airgap.register(fs)
	fs.IntVar(&f.imageGCHigh, "image-gc-high-threshold", 85, "disk usage (percent) of the image file system above which the kubelet removes unused images (pinned ones never)")
	fs.IntVar(&f.imageGCLow, "image-gc-low-threshold", 80, "disk usage (percent) the kubelet's image garbage collection brings it down to")
	fs.DurationVar(&f.imageGCMinAge, "image-gc-min-age", 2*time.Minute, "youngest an unused image may be to be garbage collected")
	fs.StringToStringVar(&f.testEvictionHard, "test-eviction-hard", nil, "for tests: the kubelet's hard eviction thresholds, e.g. imagefs.available=99%")
	_ = fs.MarkHidden("test-eviction-hard")
	fs.DurationVar(&f.testDNSReloadInterval, "test-dns-reload-interval", 0, "for tests: how often a changed --dns-config is looked for (default 30s, at least 2s)")
	_ = fs.MarkHidden("test-dns-reload-interval")
}

// config turns the raw values into a server.Config, with one-line errors.
func (f *serverFlags) config() (server.Config, error) {
	c := server.Config{
		DataDir: f.dataDir, RunDir: f.runDir, WriteKubeconfig: f.writeKubeconfig,
		NodeName: f.nodeName, ClusterDomain: f.clusterDomain,
		HTTPSPort: f.httpsPort, EtcdClientPort: f.etcdClientPort, EtcdPeerPort: f.etcdPeerPort, KubeletPort: f.kubeletPort,
		DisableAgent: f.disableAgent, StopPodsOnExit: f.stopPodsOnExit, StartTimeout: f.startTimeout,
		DisableDNS: f.disableDNS, DNSPort: f.dnsPort, DNSConfigFile: f.dnsConfig, ResolvConf: f.resolvConf,
		KuboxVersion: version,
	}
	f.snapshot.apply(&c)
	f.proxy.apply(&c)
	c.PodNetwork = server.PodNetworkSettings{Backend: f.podNetworkBackend, VXLANPort: f.vxlanPort, VXLANVNI: f.vxlanVNI}
	f.airgap.apply(&c)
	c.ImageGCHighThreshold, c.ImageGCLowThreshold, c.ImageGCMinAge = f.imageGCHigh, f.imageGCLow, f.imageGCMinAge
	c.TestEvictionHard = f.testEvictionHard
	var err error
	if c.Token, err = f.joinToken(); err != nil {
		return c, err
	}
	c.JoinURL = f.join
	c.KubeletCgroupRoot = f.kubeletCgroupRoot
	c.CPUManagerPolicy, c.ReservedCPUs = f.cpuManagerPolicy, f.reservedCPUs
	c.CertCheckInterval, c.LeafCertLifetime = f.certCheckInterval, f.testLeafCertLifetime
	c.MetricsAddress = f.metricsAddress
	if c.MetricsAddress != "none" {
		if _, port, err := net.SplitHostPort(c.MetricsAddress); err != nil || port == "" {
			return c, fmt.Errorf("--metrics-address %q: want host:port such as %s, or none", c.MetricsAddress, metrics.DefaultAddress)
		}
	}
	c.DNSReloadInterval = f.testDNSReloadInterval
	if err := kubelet.CheckPolicy(c.CPUManagerPolicy); err != nil {
		return c, err
	}
	if err := kubelet.CheckReservedCPUs(c.ReservedCPUs); err != nil {
		return c, err
	}
	if c.SystemReserved, err = kubelet.ParseReserved("system-reserved", f.systemReserved); err != nil {
		return c, err
	}
	if c.KubeReserved, err = kubelet.ParseReserved("kube-reserved", f.kubeReserved); err != nil {
		return c, err
	}
	if c.StartTimeout <= 0 {
		return c, fmt.Errorf("--start-timeout %s: must be positive, e.g. 10m", c.StartTimeout)
	}
	if c.CertCheckInterval <= 0 {
		return c, fmt.Errorf("--cert-check-interval %s: must be positive, e.g. 1h", c.CertCheckInterval)
	}
	if f.nodeIP != "" {
		if c.NodeIP = net.ParseIP(f.nodeIP).To4(); c.NodeIP == nil {
			return c, fmt.Errorf("--node-ip %q: not an IPv4 address", f.nodeIP)
		}
	}
	if _, c.ClusterCIDR, err = net.ParseCIDR(f.clusterCIDR); err != nil {
		return c, fmt.Errorf("--cluster-cidr %q: not a CIDR such as 10.42.0.0/16", f.clusterCIDR)
	}
	if _, c.ServiceCIDR, err = net.ParseCIDR(f.serviceCIDR); err != nil {
		return c, fmt.Errorf("--service-cidr %q: not a CIDR such as 10.43.0.0/16", f.serviceCIDR)
	}
	if f.clusterDNS != "" {
		if c.ClusterDNS = net.ParseIP(f.clusterDNS).To4(); c.ClusterDNS == nil {
			return c, fmt.Errorf("--cluster-dns %q: not an IPv4 address", f.clusterDNS)
		}
	}
	return c, c.Complete()
}

// joinToken picks the token from --token, --token-file or $KUBOX_TOKEN.
func (f *serverFlags) joinToken() (string, error) {
	switch {
	case f.token != "":
		return f.token, nil
	case f.tokenFile != "":
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return strings.TrimSpace(string(data)), nil
	case f.join != "":
		return os.Getenv("KUBOX_TOKEN"), nil
	}
	return "", nil
}

func newServerCommand() *cobra.Command {
	var f serverFlags
	var configFile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a kubox node: etcd, the Kubernetes control plane, containerd and the kubelet",
		Long: `Run a kubox node: etcd, the Kubernetes control plane, containerd and the kubelet.

Every flag can also be set as a key of the config file (default ` + defaultConfigFile + `),
e.g. "cluster-cidr: 10.42.0.0/16"; a flag given on the command line wins.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// First of all: take NOTIFY_SOCKET and WATCHDOG_* out of the
			// environment, before the in-process kubelet (which sends
			// READY=1 as it starts) or containerd could see them.
			notifier, err := systemd.FromEnv(nil)
			if err != nil {
				return err
			}
			explicit := cmd.Flags().Changed("config")
			if err := configfile.Apply(cmd.Flags(), configFile, explicit); err != nil {
				return err
			}
			cfg, err := f.config()
			if err != nil {
				notifier.Stopping("bad configuration: " + err.Error())
				return err
			}
			if os.Getenv("GOGC") == "" {
				// Collect at 50% heap growth instead of Go's 100%: idle PSS of
				// the whole node fell by about 50 MB (measured), at a CPU cost
				// an idle edge box does not notice. GOGC overrides it.
				debug.SetGCPercent(50)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			srv, err := server.New(cfg, log)
			if err != nil {
				return err
			}
			srv.SetNotifier(notifier)
			if err := srv.Preflight(); err != nil {
				notifier.Stopping("preflight failed: " + err.Error())
				return err
			}
			defer srv.Release()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return srv.Run(ctx)
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVarP(&configFile, "config", "c", defaultConfigFile, "config file (YAML; keys are the flag names)")
	return cmd
}
