package bootstrap

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Config says where the PKI lives and which names and addresses the node's
// certificates must cover.
type Config struct {
	Dir                 string           // PKI dir, e.g. /var/lib/kubox/pki (created 0700)
	KubeconfigDir       string           // e.g. /var/lib/kubox/kubeconfig (created 0700)
	NodeName            string           // lower-cased hostname
	NodeIPs             []net.IP         // the node's IPs (at least one)
	ServiceCIDR         *net.IPNet       // first IP goes into apiserver SANs
	ClusterDomain       string           // default "cluster.local" if empty
	APIServerURL        string           // server URL written into kubeconfigs, e.g. https://127.0.0.1:6443
	AdminKubeconfigPath string           // if non-empty, an extra copy of the admin kubeconfig (0600, parent dir created 0755)
	Now                 func() time.Time // nil = time.Now; for tests
	// LeafLifetime overrides the 1-year lifetime of leaf certificates (0 =
	// default). Tests use minutes to watch renewal happen.
	LeafLifetime time.Duration
}

const defaultClusterDomain = "cluster.local"

// normalized checks cfg and returns a copy with defaults filled in, so the
// rest of the package never has to guess.
func (cfg Config) normalized() (Config, error) {
	if cfg.Dir == "" {
		return cfg, errors.New("config: Dir is empty")
	}
	if cfg.KubeconfigDir == "" {
		return cfg, errors.New("config: KubeconfigDir is empty")
	}
	// The kubelet registers the lower-cased hostname; the node client cert's
	// CN must match it exactly or the node authorizer rejects the kubelet.
	cfg.NodeName = strings.ToLower(strings.TrimSpace(cfg.NodeName))
	if cfg.NodeName == "" {
		return cfg, errors.New("config: NodeName is empty")
	}
	if len(cfg.NodeIPs) == 0 {
		return cfg, errors.New("config: NodeIPs is empty, need at least one node IP")
	}
	for i, ip := range cfg.NodeIPs {
		if ip == nil || ip.IsUnspecified() {
			return cfg, fmt.Errorf("config: NodeIPs[%d] %q is not a usable address", i, ip)
		}
	}
	if cfg.ServiceCIDR == nil {
		return cfg, errors.New("config: ServiceCIDR is nil")
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = defaultClusterDomain
	}
	u, err := url.Parse(cfg.APIServerURL)
	if err != nil {
		return cfg, fmt.Errorf("config: APIServerURL: %w", err)
	}
	if u.Scheme != "https" || u.Hostname() == "" {
		return cfg, fmt.Errorf("config: APIServerURL %q must be an https URL with a host", cfg.APIServerURL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// apiServerHost is the host part of APIServerURL; the apiserver cert must
// cover it or the kubeconfigs written here would not verify.
func (cfg Config) apiServerHost() string {
	u, err := url.Parse(cfg.APIServerURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// firstServiceIP returns the network address of cidr plus one: the ClusterIP
// the apiserver gives the "kubernetes" service.
func firstServiceIP(cidr *net.IPNet) (net.IP, error) {
	ip := cidr.IP.Mask(cidr.Mask)
	if ip == nil {
		return nil, fmt.Errorf("service CIDR %s: address and mask do not match", cidr)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	next := make(net.IP, len(ip))
	copy(next, ip)
	for i := len(next) - 1; i >= 0; i-- {
		next[i]++
		if next[i] != 0 {
			break
		}
	}
	if !cidr.Contains(next) {
		return nil, fmt.Errorf("service CIDR %s is too small to hold a service IP", cidr)
	}
	return next, nil
}
