package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/internal/configfile"
	"github.com/kubox/kubox/internal/fatal"
	"github.com/kubox/kubox/server"
	"github.com/kubox/kubox/systemd"
)

// serverFlags are `kubox server`'s flags; every one can also be a key of the
// config file. Most are bound straight to cfg, whose values start as
// server.DefaultConfig(); the few that need parsing are kept as text.
type serverFlags struct {
	cfg                                          server.Config
	nodeIP, clusterCIDR, serviceCIDR, clusterDNS string
	systemReserved, kubeReserved                 string
	nodePortAddresses                            string
	token, tokenFile                             string
}

func newServerFlags() *serverFlags { return &serverFlags{cfg: server.DefaultConfig()} }

func (f *serverFlags) register(fs *pflag.FlagSet) {
	c := &f.cfg
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "where kubox keeps its state (etcd, PKI, images)")
	fs.StringVar(&c.RunDir, "run-dir", c.RunDir, "where kubox keeps sockets and runtime state")
	fs.StringVar(&c.WriteKubeconfig, "write-kubeconfig", c.WriteKubeconfig, "where to write the admin kubeconfig (0600)")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "this node's name (default: the hostname, lower-cased)")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's IPv4 address (default: the address of the default route's interface)")
	fs.StringVar(&f.clusterCIDR, "cluster-cidr", c.ClusterCIDR.String(), fmt.Sprintf("pod IP range; each node gets a /%d of it", server.NodeCIDRMaskSize))
	fs.StringVar(&f.serviceCIDR, "service-cidr", c.ServiceCIDR.String(), "Service ClusterIP range")
	fs.StringVar(&f.clusterDNS, "cluster-dns", "", "cluster DNS Service IP (default: the 10th address of --service-cidr)")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "cluster DNS domain")
	fs.IntVar(&c.HTTPSPort, "https-port", c.HTTPSPort, "apiserver port")
	fs.IntVar(&c.EtcdClientPort, "etcd-client-port", c.EtcdClientPort, "etcd client port (on 127.0.0.1)")
	fs.IntVar(&c.EtcdPeerPort, "etcd-peer-port", c.EtcdPeerPort, "etcd peer port (on --node-ip)")
	fs.IntVar(&c.KubeletPort, "kubelet-port", c.KubeletPort, "kubelet API port")
	fs.Int64Var(&c.EtcdQuotaBytes, "etcd-quota-bytes", c.EtcdQuotaBytes, "etcd database size at which etcd refuses writes (NOSPACE) until kubox frees room; 16 MiB to 8 GiB")
	fs.BoolVar(&c.DisableAgent, "disable-agent", c.DisableAgent, "run the control plane only: no containerd, kubelet or pod network")
	fs.BoolVar(&c.DisableDNS, "disable-dns", c.DisableDNS, "do not serve cluster DNS (then run a DNS server for --cluster-dns yourself)")
	fs.BoolVar(&c.DisableNetworkPolicy, "disable-network-policy", c.DisableNetworkPolicy, "do not enforce NetworkPolicies (when another controller does, or none is wanted)")
	fs.IntVar(&c.DNSPort, "dns-port", c.DNSPort, "cluster DNS port on --node-ip (UDP and TCP)")
	fs.StringVar(&c.DNSConfigFile, "dns-config", c.DNSConfigFile, "extra Corefile server blocks for cluster DNS, e.g. stub zones (missing file: none)")
	fs.StringVar(&c.ResolvConf, "resolv-conf", c.ResolvConf, "resolv.conf whose nameservers cluster DNS forwards other names to")
	fs.StringSliceVar(&c.DNSAllowCIDRs, "dns-allow-cidrs", c.DNSAllowCIDRs, "comma-separated CIDRs or addresses that may also query cluster DNS (pods, the cluster's boxes and loopback always may; everyone else is refused)")
	fs.BoolVar(&c.StopPodsOnExit, "stop-pods-on-exit", c.StopPodsOnExit, "stop every pod when kubox stops, so no container outlives it")
	fs.StringVar(&c.JoinURL, "join", "", "join the cluster of the box whose apiserver is at this URL, e.g. https://10.0.0.1:6443 (with --token)")
	fs.StringVar(&f.token, "token", "", "join token from `kubox token create` (also --token-file or $KUBOX_TOKEN, which keep it out of the process list)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the join token")
	fs.DurationVar(&c.StartTimeout, "start-timeout", c.StartTimeout, "give up (and exit) when the node is not ready within this time")

	fs.StringVar(&c.SnapshotSchedule, "snapshot-schedule", c.SnapshotSchedule, `take encrypted etcd+PKI snapshots on this cron schedule ("0 */6 * * *", "@every 6h"); empty: none`)
	fs.IntVar(&c.SnapshotRetention, "snapshot-retention", c.SnapshotRetention, "keep the newest N scheduled snapshots (manual ones are never pruned); 0 keeps all")
	fs.StringVar(&c.SnapshotDir, "snapshot-dir", c.SnapshotDir, "where snapshots go (default <data-dir>/snapshots)")
	fs.StringVar(&c.SnapshotKeyFile, "snapshot-key-file", c.SnapshotKeyFile, "backup key file (create it with \"kubox snapshot key create\")")
	registerS3Flags(fs, c)

	p := &c.Proxy
	fs.BoolVar(&p.Disable, "disable-proxy", p.Disable, "run no service proxy (when another one, e.g. a CNI's, serves Services)")
	fs.StringVar(&p.Mode, "proxy-mode", p.Mode, "service proxy mode: auto (ipvs where the kernel has ip_vs, else nftables), ipvs, nftables or iptables")
	fs.StringVar(&p.IPVSScheduler, "ipvs-scheduler", p.IPVSScheduler, "IPVS scheduler: rr, lc, dh, sh, sed, nq or wrr")
	fs.BoolVar(&p.IPVSStrictARP, "ipvs-strict-arp", p.IPVSStrictARP, "IPVS mode: answer ARP only for addresses of the asked interface (needed by L2 load balancers such as MetalLB)")
	fs.DurationVar(&p.SyncPeriod, "proxy-sync-period", p.SyncPeriod, "longest time the service rules may wait for a resync after a failed sync")
	fs.DurationVar(&p.MinSyncPeriod, "proxy-min-sync-period", p.MinSyncPeriod, "shortest time between two syncs of the service rules (batches bursts of changes)")
	fs.BoolVar(&p.MasqueradeAll, "proxy-masquerade-all", p.MasqueradeAll, "SNAT all Service traffic, not only traffic from outside the pod network")
	fs.StringVar(&f.nodePortAddresses, "nodeport-addresses", "", "comma-separated IPv4 CIDRs whose addresses serve NodePorts (default: the node IP only)")
	fs.BoolVar(&p.CleanupOnStop, "proxy-cleanup-on-stop", p.CleanupOnStop, "remove the service rules when kubox stops (false keeps Services of still-running pods reachable)")

	n := &c.PodNetwork
	fs.StringVar(&n.Backend, "pod-network-backend", n.Backend, "how pod traffic reaches other boxes: auto (a host route where the box is on a shared subnet, VXLAN otherwise), host-gw or vxlan")
	fs.IntVar(&n.VXLANPort, "vxlan-port", n.VXLANPort, "UDP port of the pod network's VXLAN overlay (the same on every box)")
	fs.IntVar(&n.VXLANVNI, "vxlan-vni", n.VXLANVNI, "VXLAN network identifier of the pod network's overlay (the same on every box)")

	fs.StringVar(&c.CPUManagerPolicy, "cpu-manager-policy", c.CPUManagerPolicy, "kubelet CPU manager policy: none, or static (Guaranteed pods with whole CPUs get exclusive CPUs)")
	fs.StringVar(&c.ReservedCPUs, "reserved-cpus", c.ReservedCPUs, "CPUs kept for the system and kubox, e.g. 0 or 0-1 (overrides the cpu of --system-reserved and --kube-reserved)")
	fs.StringVar(&f.systemReserved, "system-reserved", formatReserved(c.SystemReserved), "resources kept for the OS (name=quantity,...; none for nothing)")
	fs.StringVar(&f.kubeReserved, "kube-reserved", formatReserved(c.KubeReserved), "resources kept for kubox itself (name=quantity,...; none for nothing)")
	fs.DurationVar(&c.CertCheckInterval, "cert-check-interval", c.CertCheckInterval, "how often to look for certificates to renew (also at start)")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "host:port of kubox's metrics endpoint (HTTPS, client certificate from the cluster's client CA required); none turns it off")

	fs.StringVar(&c.AirgapImagesDir, "airgap-images-dir", c.AirgapImagesDir, "image bundles here are imported at start and when they appear (default <data-dir>/images)")
	fs.StringVar(&c.AirgapPublicKeyFile, "airgap-public-key-file", c.AirgapPublicKeyFile, "trusted ed25519 public key: bundle signatures are checked against it")
	fs.BoolVar(&c.AirgapRequireSignature, "airgap-require-signature", c.AirgapRequireSignature, "refuse bundles not signed by the trusted key")
	fs.BoolVar(&c.AirgapAllowUnsigned, "airgap-allow-unsigned", c.AirgapAllowUnsigned, "import unsigned bundles although airgap-public-key-file is set (signed ones are still checked)")
	fs.IntVar(&c.ImageGCHighThreshold, "image-gc-high-threshold", c.ImageGCHighThreshold, "disk usage (percent) of the image file system above which the kubelet removes unused images (pinned ones never)")
	fs.IntVar(&c.ImageGCLowThreshold, "image-gc-low-threshold", c.ImageGCLowThreshold, "disk usage (percent) the kubelet's image garbage collection brings it down to")
	fs.DurationVar(&c.ImageGCMinAge, "image-gc-min-age", c.ImageGCMinAge, "youngest an unused image may be to be garbage collected")
	fs.StringVar(&c.ManifestsDir, "manifests-dir", c.ManifestsDir, "every .yaml, .yml and .json file here is applied to the cluster (server-side apply), at start and when it changes; its objects are deleted when it goes")
	fs.StringVar(&c.StorageDir, "storage-dir", c.StorageDir, "where this box keeps the local-path persistent volumes it provisions, one directory each (default <data-dir>/storage)")

	// For tests only: hidden, and gathered in cfg.Testing.
	t := &c.Testing
	fs.StringVar(&t.KubeletCgroupRoot, "kubelet-cgroup-root", "", "for tests running several boxes on one machine: the cgroup under which this box's pod cgroups go")
	fs.DurationVar(&t.LeafCertLifetime, "test-leaf-cert-lifetime", 0, "for tests: lifetime of newly issued leaf certificates (default one year)")
	fs.StringToStringVar(&t.EvictionHard, "test-eviction-hard", nil, "for tests: the kubelet's hard eviction thresholds, e.g. imagefs.available=99%")
	fs.DurationVar(&t.DNSReloadInterval, "test-dns-reload-interval", 0, "for tests: how often a changed --dns-config is looked for (default 30s, at least 2s)")
	fs.BoolVar(&t.ControllerManagerAfterNode, "test-controller-manager-after-node", false, "for tests: start the controller manager only once the kubelet has registered the node")
	for _, name := range []string{"kubelet-cgroup-root", "test-leaf-cert-lifetime", "test-eviction-hard", "test-dns-reload-interval", "test-controller-manager-after-node"} {
		_ = fs.MarkHidden(name)
	}
	fs.Int64Var(&t.AirgapWriteRate, "test-airgap-write-rate", 0, "for tests: cap the images dir's imports at this many bytes written per second (an import that outlasts a start timeout)")
	_ = fs.MarkHidden("test-airgap-write-rate")
}

// formatReserved writes a reserved-resources map the way --system-reserved
// takes it.
func formatReserved(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// config parses what the flags hold as text into the server.Config, then
// completes and validates it; every error is one line.
func (f *serverFlags) config() (server.Config, error) {
	c := f.cfg
	c.KuboxVersion = version
	var err error
	if c.Token, err = f.joinToken(); err != nil {
		return c, err
	}
	if c.SystemReserved, err = kubelet.ParseReserved("system-reserved", f.systemReserved); err != nil {
		return c, err
	}
	if c.KubeReserved, err = kubelet.ParseReserved("kube-reserved", f.kubeReserved); err != nil {
		return c, err
	}
	c.Proxy.NodePortAddresses = nil
	for _, s := range strings.Split(f.nodePortAddresses, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Proxy.NodePortAddresses = append(c.Proxy.NodePortAddresses, s)
		}
	}
	if f.nodeIP != "" {
		if c.NodeIP = net.ParseIP(f.nodeIP).To4(); c.NodeIP == nil {
			return c, fmt.Errorf("--node-ip %q: not an IPv4 address", f.nodeIP)
		}
	}
	if _, c.ClusterCIDR, err = net.ParseCIDR(f.clusterCIDR); err != nil {
		return c, fmt.Errorf("--cluster-cidr %q: not a CIDR such as %s", f.clusterCIDR, server.DefaultClusterCIDR)
	}
	if _, c.ServiceCIDR, err = net.ParseCIDR(f.serviceCIDR); err != nil {
		return c, fmt.Errorf("--service-cidr %q: not a CIDR such as %s", f.serviceCIDR, server.DefaultServiceCIDR)
	}
	if f.clusterDNS != "" {
		if c.ClusterDNS = net.ParseIP(f.clusterDNS).To4(); c.ClusterDNS == nil {
			return c, fmt.Errorf("--cluster-dns %q: not an IPv4 address", f.clusterDNS)
		}
	}
	if err := c.Complete(); err != nil {
		return c, err
	}
	return c, c.Validate()
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
	case f.cfg.JoinURL != "":
		return os.Getenv("KUBOX_TOKEN"), nil
	}
	return "", nil
}

func newServerCommand() *cobra.Command {
	f := newServerFlags()
	var configFile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a kubox node: etcd, the Kubernetes control plane, containerd and the kubelet",
		Long: `Run a kubox node: etcd, the Kubernetes control plane, containerd and the kubelet.

Every flag can also be set as a key of the config file (default ` + server.DefaultConfigFile + `),
e.g. "cluster-cidr: 10.42.0.0/16"; a flag given on the command line wins.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// First of all: take NOTIFY_SOCKET and WATCHDOG_* out of the
			// environment, before the kubelet child (which sends
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
			// klog's exit is process-wide: set here, once, for the
			// upstream components this process runs.
			// Grace: components waiting on a wedged etcd each use their
			// share of the stop (at least 3 s), which can add up past
			// StopTimeout on a loaded box.
			fatals := &fatal.Catcher{Grace: 2*server.StopTimeout + 15*time.Second}
			klog.OsExit = fatals.KlogExit
			srv.CatchFatal(fatals)
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
	cmd.Flags().StringVarP(&configFile, "config", "c", server.DefaultConfigFile, "config file (YAML; keys are the flag names)")
	return cmd
}
