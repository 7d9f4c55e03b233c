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
	"strings"
	"time"
)

// Config is everything `kubox server` can be told.
type Config struct {
	DataDir         string // persistent state; default /var/lib/kubox
	RunDir          string // sockets and runtime state; default /run/kubox
	WriteKubeconfig string // admin kubeconfig copy; default /etc/kubox/admin.kubeconfig
	NodeName        string
	NodeIP          net.IP
	ClusterCIDR     *net.IPNet
	ServiceCIDR     *net.IPNet
	ClusterDNS      net.IP
	ClusterDomain   string
	HTTPSPort       int
	EtcdClientPort  int
	EtcdPeerPort    int
	KubeletPort     int
	DisableAgent    bool // control plane only: no containerd, kubelet or pod network
	// JoinURL is the apiserver of a running box to join (https://BOX1:6443);
	// Token the join token (`kubox token create`). A secret: never logged.
	JoinURL string
	Token   string
	// StopPodsOnExit stops every pod when kubox stops, so nothing outlives it.
	StopPodsOnExit bool
	// StartTimeout bounds a whole start (default StartTimeout); slow boxes
	// and emulators need more.
	StartTimeout time.Duration

	// Cluster DNS (see embedded/dns): served on NodeIP:DNSPort (default
	// 53) unless DisableDNS; DNSConfigFile holds extra Corefile server
	// blocks (default /etc/kubox/dns.conf; missing = none); ResolvConf
	// lists the upstream resolvers (default /etc/resolv.conf).
	DisableDNS    bool
	DNSPort       int
	DNSConfigFile string
	ResolvConf    string
	// DNSReloadInterval: how often a changed DNSConfigFile is looked for
	// (0 = 30s; tests set 2s).
	DNSReloadInterval time.Duration

	// Scheduled snapshots (see backup.SchedulerConfig): a cron spec, how
	// many scheduled snapshots to keep (0 = all), where, and the key.
	// SnapshotDir defaults to <DataDir>/snapshots, SnapshotKeyFile to
	// /etc/kubox/backup.key.
	SnapshotSchedule  string
	SnapshotRetention int
	SnapshotDir       string
	SnapshotKeyFile   string
	// KuboxVersion is recorded in snapshot headers.
	KuboxVersion string

	// Certificate renewal: how often the running server looks for leaves
	// to renew (default DefaultCertCheckInterval), and, for tests only, a
	// short lifetime for the leaves it issues (0 = one year).
	CertCheckInterval time.Duration
	LeafCertLifetime  time.Duration
	// MetricsAddress is host:port of kubox's own metrics endpoint (TLS,
	// client certs from the client CA); "none" turns it off.
	MetricsAddress string

	// CPU manager and reserved resources (see embedded/kubelet): policy
	// "none" (default) or "static"; ReservedCPUs is a cpuset such as "0"
	// or "0-1"; SystemReserved/KubeReserved map resource names (cpu,
	// memory, ephemeral-storage, pid) to quantities.
	CPUManagerPolicy string
	ReservedCPUs     string
	SystemReserved   map[string]string
	KubeReserved     map[string]string

	// Proxy configures the service proxy (see proxy.go).
	Proxy ProxySettings
	// PodNetwork says how pod traffic crosses boxes (see podnetwork.go).
	PodNetwork PodNetworkSettings

	// KubeletCgroupRoot puts this box's pod cgroups under that cgroup; for
	// several boxes on one test machine (see embedded/kubelet).
	KubeletCgroupRoot string
	// Air-gap image bundles (see package airgap): the images dir (default
	// <DataDir>/images), the trusted public key file, and whether bundles
	// must be signed by it.
	AirgapImagesDir        string
	AirgapPublicKeyFile    string
	AirgapRequireSignature bool
	// Kubelet image garbage collection: disk usage thresholds (percent)
	// and the minimum age of an unused image. Pinned images are never
	// collected.
	ImageGCHighThreshold, ImageGCLowThreshold int
	ImageGCMinAge                             time.Duration
	// TestEvictionHard, for tests only, replaces the kubelet's hard
	// eviction thresholds: the eviction manager checks every 10 s and
	// reclaims disk by deleting unused, unpinned images, whereas the
	// periodic image GC runs only every 5 minutes.
	TestEvictionHard map[string]string
}

// Paths are the files and dirs kubox keeps under DataDir and RunDir.
type Paths struct {
	PKI, Kubeconfigs, Etcd, Kubelet, KubeletConfig  string
	ContainerdRoot, ContainerdState, ContainerdSock string
	ContainerdConfig, ContainerdLog                 string
	Bin, CNIBin, CNIConf, CNIIPAM                   string
	Lock, Corefile                                  string
}

// Paths returns where this node keeps its files.
func (c *Config) Paths() Paths {
	d, r := c.DataDir, c.RunDir
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
	}
}

// Complete fills in defaults and checks the configuration. Every error is
// one line that says what is wrong and what to do.
func (c *Config) Complete() error {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/kubox"
	}
	if c.RunDir == "" {
		c.RunDir = "/run/kubox"
	}
	if !filepath.IsAbs(c.DataDir) {
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
	if c.NodeIP.IsLoopback() || c.NodeIP.IsUnspecified() {
		return fmt.Errorf("node IP %s: must be an address of this host other than loopback (set --node-ip)", c.NodeIP)
	}
	if c.ClusterCIDR == nil || c.ServiceCIDR == nil {
		return errors.New("cluster and service CIDRs must be set")
	}
	if c.ClusterCIDR.Contains(c.ServiceCIDR.IP) || c.ServiceCIDR.Contains(c.ClusterCIDR.IP) {
		return fmt.Errorf("--cluster-cidr %s and --service-cidr %s overlap: choose ranges that do not", c.ClusterCIDR, c.ServiceCIDR)
	}
	if ones, bits := c.ClusterCIDR.Mask.Size(); bits != 32 || ones > 24 {
		return fmt.Errorf("--cluster-cidr %s: need an IPv4 range of /24 or larger (each node gets a /24)", c.ClusterCIDR)
	}
	if ones, bits := c.ServiceCIDR.Mask.Size(); bits != 32 || ones > 28 {
		return fmt.Errorf("--service-cidr %s: need an IPv4 range of /28 or larger", c.ServiceCIDR)
	}
	if c.ClusterDNS == nil {
		c.ClusterDNS = NthIP(c.ServiceCIDR, 10)
	}
	if !c.ServiceCIDR.Contains(c.ClusterDNS) {
		return fmt.Errorf("--cluster-dns %s is outside --service-cidr %s", c.ClusterDNS, c.ServiceCIDR)
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	for name, p := range map[string]*int{"https-port": &c.HTTPSPort, "etcd-client-port": &c.EtcdClientPort, "etcd-peer-port": &c.EtcdPeerPort, "kubelet-port": &c.KubeletPort} {
		if *p < 0 || *p > 65535 {
			return fmt.Errorf("--%s %d: not a TCP port", name, *p)
		}
	}
	if (c.JoinURL == "") != (c.Token == "") {
		return errors.New("--join and --token go together: give both (the token from `kubox token create` on a running box), or neither")
	}
	if c.HTTPSPort == 0 {
		c.HTTPSPort = 6443
	}
	if c.EtcdClientPort == 0 {
		c.EtcdClientPort = 2379
	}
	if c.EtcdPeerPort == 0 {
		c.EtcdPeerPort = 2380
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	if c.AirgapImagesDir == "" {
		c.AirgapImagesDir = filepath.Join(c.DataDir, "images")
	}
	if c.AirgapRequireSignature && c.AirgapPublicKeyFile == "" {
		return errors.New("--airgap-require-signature needs --airgap-public-key-file: the trusted key bundles must be signed with")
	}
	if c.ImageGCHighThreshold == 0 && c.ImageGCLowThreshold == 0 {
		c.ImageGCHighThreshold, c.ImageGCLowThreshold = 85, 80
	}
	if c.ImageGCHighThreshold < 0 || c.ImageGCHighThreshold > 100 || c.ImageGCLowThreshold < 0 || c.ImageGCLowThreshold >= c.ImageGCHighThreshold {
		return fmt.Errorf("--image-gc-high-threshold %d, --image-gc-low-threshold %d: need 0 <= low < high <= 100", c.ImageGCHighThreshold, c.ImageGCLowThreshold)
	}
	if c.ImageGCMinAge < 0 {
		return fmt.Errorf("--image-gc-min-age %s: must not be negative", c.ImageGCMinAge)
	}
	if c.DNSPort < 0 || c.DNSPort > 65535 {
		return fmt.Errorf("--dns-port %d: not a port", c.DNSPort)
	}
	if c.DNSPort == 0 {
		c.DNSPort = 53
	}
	if c.DNSConfigFile == "" {
		c.DNSConfigFile = "/etc/kubox/dns.conf"
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if err := c.PodNetwork.complete(); err != nil {
		return err
	}
	return c.Proxy.complete()
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
