// Package server assembles one kubox node: it checks the host, bootstraps
// the PKI, and runs etcd, the control plane, containerd, the kubelet and the
// pod network under one supervisor. `kubox server` and the tests share it.
package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/backup/s3"
	"github.com/kubox/kubox/embedded/etcd"
	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/proxy/mode"
	"github.com/kubox/kubox/services/metrics"
	"github.com/kubox/kubox/services/network"
)

// Config is everything `kubox server` can be told. DefaultConfig holds its
// defaults (the flags are registered from it), Complete derives what
// depends on the host or on other fields, and Validate checks it.
type Config struct {
	DataDir         string // persistent state
	RunDir          string // sockets and runtime state
	WriteKubeconfig string // admin kubeconfig copy
	NodeName        string // default: the hostname, lower-cased
	NodeIP          net.IP // default: the default route's source address
	ClusterCIDR     *net.IPNet
	ServiceCIDR     *net.IPNet
	ClusterDNS      net.IP // default: the 10th address of ServiceCIDR
	ClusterDomain   string
	HTTPSPort       int
	EtcdClientPort  int
	EtcdPeerPort    int
	KubeletPort     int
	// EtcdQuotaBytes is the etcd database size at which etcd raises NOSPACE
	// and refuses writes (see embedded/etcd's space keeper).
	EtcdQuotaBytes int64
	DisableAgent   bool // control plane only: no containerd, kubelet or pod network
	// JoinURL is the apiserver of a running box to join (https://BOX1:6443);
	// Token the join token (`kubox token create`). A secret: never logged.
	JoinURL string
	Token   string
	// StopPodsOnExit stops every pod when kubox stops, so nothing outlives it.
	StopPodsOnExit bool
	// StartTimeout bounds a whole start; slow boxes and emulators need more.
	StartTimeout time.Duration

	// DisableNetworkPolicy: no NetworkPolicy enforcement (services/netpol).
	DisableNetworkPolicy bool

	// Cluster DNS (see embedded/dns): served on NodeIP:DNSPort unless
	// DisableDNS; DNSConfigFile holds extra Corefile server blocks
	// (missing = none); ResolvConf lists the upstream resolvers.
	DisableDNS    bool
	DNSPort       int
	DNSConfigFile string
	ResolvConf    string
	DNSAllowCIDRs []string // besides pods, the boxes and loopback, who may query

	// Scheduled snapshots (see backup.SchedulerConfig): a cron spec, how
	// many scheduled snapshots to keep (default backup.DefaultRetention;
	// 0 = all), where (default
	// <DataDir>/snapshots), and the key.
	SnapshotSchedule  string
	SnapshotRetention int
	SnapshotDir       string
	SnapshotKeyFile   string
	// SnapshotS3 is an S3-compatible store that snapshots stream to
	// (disabled when empty); SnapshotS3KeepLocal keeps a copy in
	// SnapshotDir too.
	SnapshotS3          s3.Config
	SnapshotS3KeepLocal bool
	// KuboxVersion is recorded in snapshot headers.
	KuboxVersion string

	// CertCheckInterval is how often the running server looks for leaves
	// to renew.
	CertCheckInterval time.Duration
	// MetricsAddress is host:port of kubox's own metrics endpoint (TLS,
	// client certs from the client CA); "none" turns it off.
	MetricsAddress string

	// CPU manager and reserved resources (see embedded/kubelet): policy
	// "none" or "static"; ReservedCPUs is a cpuset such as "0" or "0-1";
	// SystemReserved/KubeReserved map resource names (cpu, memory,
	// ephemeral-storage, pid) to quantities.
	CPUManagerPolicy string
	ReservedCPUs     string
	SystemReserved   map[string]string
	KubeReserved     map[string]string

	// Proxy configures the service proxy (see proxy.go).
	Proxy ProxySettings
	// PodNetwork says how pod traffic crosses boxes (see podnetwork.go).
	PodNetwork PodNetworkSettings

	// Air-gap image bundles (see package airgap): the images dir (default
	// <DataDir>/images), the trusted public key file, and whether bundles
	// must be signed by it.
	AirgapImagesDir        string
	AirgapPublicKeyFile    string
	AirgapRequireSignature bool
	AirgapAllowUnsigned    bool // import unsigned bundles although a key is set
	// Kubelet image garbage collection: disk usage thresholds (percent)
	// and the minimum age of an unused image. Pinned images are never
	// collected.
	ImageGCHighThreshold, ImageGCLowThreshold int
	ImageGCMinAge                             time.Duration
	// StorageDir holds the local-path volumes this box provisions (see
	// services/localpath); default <DataDir>/storage.
	StorageDir string
	// ManifestsDir holds manifests kubox applies by itself (see
	// services/manifests); a missing dir holds none.
	ManifestsDir string

	// Testing holds knobs that only tests set (hidden flags).
	Testing TestingSettings
}

// TestingSettings are for tests only; production leaves them zero.
type TestingSettings struct {
	// KubeletCgroupRoot puts this box's pod cgroups under that cgroup, so
	// several boxes can run on one test machine (see embedded/kubelet).
	KubeletCgroupRoot string
	// LeafCertLifetime shortens the leaves the server issues (0 = one year).
	LeafCertLifetime time.Duration
	// DNSReloadInterval: how often a changed DNSConfigFile is looked for
	// (0 = 30s).
	DNSReloadInterval time.Duration
	// EvictionHard replaces the kubelet's hard eviction thresholds: the
	// eviction manager checks every 10 s and reclaims disk by deleting
	// unused, unpinned images, whereas the periodic image GC runs only
	// every 5 minutes.
	EvictionHard map[string]string
	// AirgapWriteRate caps what the images dir's imports write into
	// containerd, in bytes per second (0 = no cap): an import slow enough
	// to outlast a start timeout.
	AirgapWriteRate int64
	// ControllerManagerAfterNode holds the controller manager back until
	// the kubelet has registered this node, so its volume plugins
	// initialise after the kubelet's (the order that broke the in-process
	// kubelet's CSI node info; see embedded/kubelet).
	ControllerManagerAfterNode bool
}

// Defaults that more than one verb needs.
const (
	DefaultDataDir         = "/var/lib/kubox"
	DefaultRunDir          = "/run/kubox"
	DefaultConfigFile      = "/etc/kubox/config.yaml"
	DefaultAdminKubeconfig = "/etc/kubox/admin.kubeconfig"
	DefaultDNSConfigFile   = "/etc/kubox/dns.conf"
	DefaultManifestsDir    = "/etc/kubox/manifests"
	DefaultResolvConf      = "/etc/resolv.conf"
	DefaultClusterCIDR     = "10.42.0.0/16"
	DefaultServiceCIDR     = "10.43.0.0/16"
	DefaultClusterDomain   = "cluster.local"
	DefaultHTTPSPort       = 6443
	DefaultEtcdClientPort  = 2379
	DefaultEtcdPeerPort    = 2380
	DefaultKubeletPort     = 10250
	DefaultDNSPort         = 53
	// Bounds of EtcdQuotaBytes: a fresh cluster needs a few MiB; etcd
	// advises against more than 8 GiB.
	MinEtcdQuotaBytes = 16 << 20
	MaxEtcdQuotaBytes = 8 << 30
	// NodeCIDRMaskSize: each node's pod range is a /24 of ClusterCIDR.
	NodeCIDRMaskSize = 24
)

// DefaultConfig returns the configuration `kubox server` runs with when told
// nothing; the flags take their defaults from it. Fields that depend on the
// host (node name and IP) or on other fields are left for Complete.
func DefaultConfig() Config {
	_, clusterCIDR, _ := net.ParseCIDR(DefaultClusterCIDR)
	_, serviceCIDR, _ := net.ParseCIDR(DefaultServiceCIDR)
	return Config{
		DataDir: DefaultDataDir, RunDir: DefaultRunDir, WriteKubeconfig: DefaultAdminKubeconfig,
		ClusterCIDR: clusterCIDR, ServiceCIDR: serviceCIDR, ClusterDomain: DefaultClusterDomain,
		HTTPSPort: DefaultHTTPSPort, EtcdClientPort: DefaultEtcdClientPort, EtcdPeerPort: DefaultEtcdPeerPort,
		KubeletPort:    DefaultKubeletPort,
		EtcdQuotaBytes: etcd.DefaultQuotaBytes,
		StopPodsOnExit: true,
		StartTimeout:   StartTimeout,
		DNSPort:        DefaultDNSPort, DNSConfigFile: DefaultDNSConfigFile, ResolvConf: DefaultResolvConf,
		SnapshotKeyFile:   backup.DefaultKeyFile,
		SnapshotRetention: backup.DefaultRetention,
		CertCheckInterval: DefaultCertCheckInterval,
		MetricsAddress:    metrics.DefaultAddress,
		ManifestsDir:      DefaultManifestsDir,
		CPUManagerPolicy:  kubelet.CPUManagerNone,
		SystemReserved:    map[string]string{"cpu": "100m", "memory": "256Mi"},
		KubeReserved:      map[string]string{"cpu": "100m", "memory": "256Mi"},
		Proxy: ProxySettings{
			Mode: string(mode.Auto), IPVSScheduler: mode.DefaultScheduler,
			SyncPeriod: proxy.DefaultSyncPeriod, MinSyncPeriod: proxy.DefaultMinSyncPeriod,
			CleanupOnStop: true,
		},
		PodNetwork: PodNetworkSettings{
			Backend: string(network.BackendAuto), VXLANPort: network.DefaultVXLANPort, VXLANVNI: network.DefaultVXLANVNI,
		},
		ImageGCHighThreshold: 85, ImageGCLowThreshold: 80, ImageGCMinAge: 2 * time.Minute,
	}
}

// Paths are the files and dirs kubox keeps under DataDir and RunDir.
type Paths struct {
	PKI, Kubeconfigs, Etcd, Kubelet, KubeletConfig  string
	ContainerdRoot, ContainerdState, ContainerdSock string
	ContainerdConfig, ContainerdLog                 string
	Bin, CNIBin, CNIConf, CNIIPAM                   string
	Lock, Corefile, ProxyModeState, JoinState       string
	LeaseIdentity                                   string
	// KubeletPid holds the pid of the kubelet child (see embedded/kubelet):
	// in the run dir, as a pid means nothing after a reboot.
	KubeletPid string
	// KubeletServingCert is the serving certificate the kubelet got through
	// a CSR, in its cert dir (see embedded/kubelet's ServingCertFile).
	KubeletServingCert string
}

// Paths returns where this node keeps its files.
func (c *Config) Paths() Paths {
	return LayoutOf(c.DataDir, c.RunDir)
}

// LayoutOf returns the layout of a data dir and a run dir; the verbs that
// read a node's files without a whole Config use it.
func LayoutOf(dataDir, runDir string) Paths {
	d, r := dataDir, runDir
	return Paths{
		PKI:              filepath.Join(d, "pki"),
		Kubeconfigs:      filepath.Join(d, "kubeconfig"),
		Etcd:             filepath.Join(d, "etcd"),
		Kubelet:          filepath.Join(d, "kubelet"),
		KubeletConfig:    filepath.Join(d, "agent", "kubelet.yaml"),
		ContainerdRoot:   filepath.Join(d, "containerd"),
		ContainerdState:  filepath.Join(r, "containerd"),
		ContainerdSock:   filepath.Join(r, "containerd", "containerd.sock"),
		ContainerdConfig: filepath.Join(d, "agent", "containerd.toml"),
		ContainerdLog:    filepath.Join(d, "agent", "containerd.log"),
		Bin:              filepath.Join(d, "bin"),
		CNIBin:           filepath.Join(d, "bin"),
		CNIConf:          filepath.Join(d, "agent", "cni"),
		CNIIPAM:          filepath.Join(d, "cni", "networks"),
		Lock:             filepath.Join(d, "kubox.lock"),
		Corefile:         filepath.Join(d, "dns", "Corefile"),
		ProxyModeState:   filepath.Join(d, "agent", "proxy-mode"),
		JoinState:        filepath.Join(d, joinStateFile),
		LeaseIdentity:    filepath.Join(d, "lease-identity"),
		KubeletPid:       filepath.Join(r, "kubelet.pid"),

		KubeletServingCert: filepath.Join(d, "kubelet", "pki", "kubelet-server-current.pem"),
	}
}

// Port is a TCP port kubox listens on, and the flag that sets it.
type Port struct {
	Host string // "" = every address
	What string // "apiserver"
	Flag string // "--https-port"
	Port int
}

// Ports lists the TCP ports this node will listen on; the preflight and
// `kubox check` test the same list.
func (c *Config) Ports() []Port {
	nodeIP := ""
	if c.NodeIP != nil {
		nodeIP = c.NodeIP.String()
	}
	ps := []Port{
		{"", "apiserver", "--https-port", c.HTTPSPort},
		{"127.0.0.1", "etcd client", "--etcd-client-port", c.EtcdClientPort},
		{nodeIP, "etcd peer", "--etcd-peer-port", c.EtcdPeerPort},
	}
	if !c.DisableAgent {
		ps = append(ps, Port{"", "kubelet", "--kubelet-port", c.KubeletPort})
	}
	if host, p, err := net.SplitHostPort(c.MetricsAddress); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n != 0 {
			ps = append(ps, Port{host, "kubox metrics", "--metrics-address", n})
		}
	}
	if !c.DisableDNS {
		ps = append(ps, Port{nodeIP, "cluster DNS", "--dns-port", c.DNSPort})
	}
	return ps
}

// Complete derives what depends on the host or on other fields: an
// absolute data dir, node name and IP, the cluster DNS address, the
// snapshot and images dirs. It checks nothing beyond what it must read.
func (c *Config) Complete() error {
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return fmt.Errorf("data dir %q: %w", c.DataDir, err)
		}
		c.DataDir = abs
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("read hostname: %w (set --node-name)", err)
		}
		c.NodeName = h
	}
	c.NodeName = strings.ToLower(c.NodeName)
	if c.NodeIP == nil {
		ip, err := DefaultNodeIP()
		if err != nil {
			return err
		}
		c.NodeIP = ip
	}
	if c.ClusterDNS == nil && c.ServiceCIDR != nil {
		c.ClusterDNS = NthIP(c.ServiceCIDR, 10)
	}
	if c.AirgapImagesDir == "" && c.DataDir != "" {
		c.AirgapImagesDir = filepath.Join(c.DataDir, "images")
	}
	if c.StorageDir == "" && c.DataDir != "" {
		c.StorageDir = filepath.Join(c.DataDir, "storage")
	}
	if m, err := mode.Parse(c.Proxy.Mode); err == nil {
		c.Proxy.Mode = string(m)
	}
	if b, err := network.ParseBackend(c.PodNetwork.Backend); err == nil {
		c.PodNetwork.Backend = string(b)
	}
	return nil
}

// Validate checks a completed configuration and changes nothing. Every
// error is one line that says what is wrong and what to do.
func (c *Config) Validate() error {
	if c.DataDir == "" || c.RunDir == "" {
		return errors.New("--data-dir and --run-dir must not be empty")
	}
	if c.NodeName == "" {
		return errors.New("node name is empty: set --node-name")
	}
	if c.NodeIP == nil || c.NodeIP.IsLoopback() || c.NodeIP.IsUnspecified() {
		return fmt.Errorf("node IP %s: must be an address of this host other than loopback (set --node-ip)", c.NodeIP)
	}
	if c.ClusterCIDR == nil || c.ServiceCIDR == nil {
		return errors.New("cluster and service CIDRs must be set")
	}
	if c.ClusterCIDR.Contains(c.ServiceCIDR.IP) || c.ServiceCIDR.Contains(c.ClusterCIDR.IP) {
		return fmt.Errorf("--cluster-cidr %s and --service-cidr %s overlap: choose ranges that do not", c.ClusterCIDR, c.ServiceCIDR)
	}
	if ones, bits := c.ClusterCIDR.Mask.Size(); bits != 32 || ones > NodeCIDRMaskSize {
		return fmt.Errorf("--cluster-cidr %s: need an IPv4 range of /%d or larger (each node gets a /%d)", c.ClusterCIDR, NodeCIDRMaskSize, NodeCIDRMaskSize)
	}
	if ones, bits := c.ServiceCIDR.Mask.Size(); bits != 32 || ones > 28 {
		return fmt.Errorf("--service-cidr %s: need an IPv4 range of /28 or larger", c.ServiceCIDR)
	}
	if c.ClusterDNS == nil || !c.ServiceCIDR.Contains(c.ClusterDNS) {
		return fmt.Errorf("--cluster-dns %s is outside --service-cidr %s", c.ClusterDNS, c.ServiceCIDR)
	}
	if c.ClusterDomain == "" {
		return errors.New("--cluster-domain must not be empty (the usual one is " + DefaultClusterDomain + ")")
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"https-port", c.HTTPSPort}, {"etcd-client-port", c.EtcdClientPort}, {"etcd-peer-port", c.EtcdPeerPort}, {"kubelet-port", c.KubeletPort}, {"dns-port", c.DNSPort}} {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("--%s %d: not a TCP port", p.flag, p.port)
		}
	}
	if c.EtcdQuotaBytes < MinEtcdQuotaBytes || c.EtcdQuotaBytes > MaxEtcdQuotaBytes {
		return fmt.Errorf("--etcd-quota-bytes %d: must be between %d (16 MiB) and %d (8 GiB, etcd's advised maximum)", c.EtcdQuotaBytes, MinEtcdQuotaBytes, MaxEtcdQuotaBytes)
	}
	if (c.JoinURL == "") != (c.Token == "") {
		return errors.New("--join and --token go together: give both (the token from `kubox token create` on a running box), or neither")
	}
	if c.StartTimeout <= 0 {
		return fmt.Errorf("--start-timeout %s: must be positive, e.g. 10m", c.StartTimeout)
	}
	if c.CertCheckInterval <= 0 {
		return fmt.Errorf("--cert-check-interval %s: must be positive, e.g. 1h", c.CertCheckInterval)
	}
	if c.MetricsAddress != "none" {
		if _, port, err := net.SplitHostPort(c.MetricsAddress); err != nil || port == "" {
			return fmt.Errorf("--metrics-address %q: want host:port such as %s, or none", c.MetricsAddress, metrics.DefaultAddress)
		}
	}
	if err := kubelet.CheckPolicy(c.CPUManagerPolicy); err != nil {
		return err
	}
	if err := kubelet.CheckReservedCPUs(c.ReservedCPUs); err != nil {
		return err
	}
	if c.AirgapRequireSignature && c.AirgapPublicKeyFile == "" {
		return errors.New("--airgap-require-signature needs --airgap-public-key-file: the trusted key bundles must be signed with")
	}
	for _, n := range c.DNSAllowCIDRs {
		if _, _, err := net.ParseCIDR(n); err != nil && net.ParseIP(n) == nil {
			return fmt.Errorf("--dns-allow-cidrs %q: want a CIDR such as 192.0.2.0/24, or an address", n)
		}
	}
	if c.AirgapRequireSignature && c.AirgapAllowUnsigned {
		return errors.New("--airgap-require-signature and --airgap-allow-unsigned contradict each other: set one")
	}
	if c.ImageGCHighThreshold < 0 || c.ImageGCHighThreshold > 100 || c.ImageGCLowThreshold < 0 || c.ImageGCLowThreshold >= c.ImageGCHighThreshold {
		return fmt.Errorf("--image-gc-high-threshold %d, --image-gc-low-threshold %d: need 0 <= low < high <= 100", c.ImageGCHighThreshold, c.ImageGCLowThreshold)
	}
	if c.ImageGCMinAge < 0 {
		return fmt.Errorf("--image-gc-min-age %s: must not be negative", c.ImageGCMinAge)
	}
	if !c.DisableAgent && !filepath.IsAbs(c.StorageDir) {
		return fmt.Errorf("--storage-dir %q: must be an absolute path (default <data-dir>/storage)", c.StorageDir)
	}
	if !filepath.IsAbs(c.ManifestsDir) {
		return fmt.Errorf("--manifests-dir %q: must be an absolute path (default %s)", c.ManifestsDir, DefaultManifestsDir)
	}
	if err := c.PodNetwork.validate(); err != nil {
		return err
	}
	if err := c.SnapshotS3.Validate(); err != nil {
		return err
	}
	return c.Proxy.validate()
}

// NthIP returns the n-th address of a range (the network address is the 0th).
func NthIP(n *net.IPNet, i int) net.IP {
	ip := make(net.IP, len(n.IP.To4()))
	copy(ip, n.IP.To4())
	for j := len(ip) - 1; j >= 0 && i > 0; j-- {
		sum := int(ip[j]) + i
		ip[j] = byte(sum % 256)
		i = sum / 256
	}
	return ip
}

// DefaultNodeIP is the IPv4 address of the interface that holds the default
// route, or else the first global unicast IPv4 address of the host.
func DefaultNodeIP() (net.IP, error) {
	if ip := defaultRouteIP(); ip != nil {
		return ip, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w (set --node-ip)", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4(), nil
		}
	}
	return nil, errors.New("no IPv4 address on this host other than loopback: set --node-ip")
}

// defaultRouteIP asks the kernel which source address it would use towards
// a public address. UDP "connect" sends nothing.
func defaultRouteIP() net.IP {
	conn, err := net.Dial("udp4", "192.0.2.1:9") // TEST-NET-1: never routed
	if err != nil {
		return nil
	}
	defer conn.Close()
	ip := conn.LocalAddr().(*net.UDPAddr).IP.To4()
	if ip == nil || ip.IsLoopback() {
		return nil
	}
	return ip
}
