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
	// StopPodsOnExit stops every pod when kubox stops, so nothing outlives it.
	StopPodsOnExit bool
	// StartTimeout bounds a whole start (default StartTimeout); slow boxes
	// and emulators need more.
	StartTimeout time.Duration

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
}

// Paths are the files and dirs kubox keeps under DataDir and RunDir.
type Paths struct {
	PKI, Kubeconfigs, Etcd, Kubelet, KubeletConfig  string
	ContainerdRoot, ContainerdState, ContainerdSock string
	ContainerdConfig, ContainerdLog                 string
	Bin, CNIBin, CNIConf, CNIIPAM                   string
	Lock                                            string
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
