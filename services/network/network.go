// Package network gives this node's pods their network: once the controller
// manager has assigned the node a pod CIDR, it writes a bridge CNI config for
// it (containerd picks it up and the node turns Ready), turns on IP
// forwarding and masquerades traffic from pods to outside the pod network.
// Routes (routes.go) sends the other nodes' pod CIDRs to them: host routes
// on a shared subnet, VXLAN otherwise.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/internal/fsutil"
)

// Config says where the CNI config goes and how the bridge is named.
type Config struct {
	NodeName   string
	Client     kubernetes.Interface
	ConfDir    string // containerd's CNI conf_dir
	IPAMDir    string // host-local's allocations
	BridgeName string // default kubox0
	// ClusterCIDR is the whole pod network: traffic from it to anywhere
	// else is masqueraded, pod-to-pod traffic (any node) is not.
	ClusterCIDR *net.IPNet
	// CleanupOnStop removes the masquerade rules when the component stops.
	CleanupOnStop bool
	Log           *slog.Logger
	// LookPath finds the masquerade backends; nil means exec.LookPath.
	LookPath func(string) (string, error)
}

// Network is the pod network component.
type Network struct {
	cfg Config
	// cni waits for the pod CIDR and writes the CNI config for it.
	cni component.Step
	// masq rewrites the nftables masquerade table; it ends only when
	// stopped, so Network is not a component.Failer.
	masq component.Goroutine
}

var (
	_ component.Component   = (*Network)(nil)
	_ component.Initializer = (*Network)(nil)
	_ component.Readier     = (*Network)(nil)
)

// MasqueradeResync is how often the nftables masquerade table is written
// again, in case something (a firewall reload, `nft flush ruleset`)
// removed it.
const MasqueradeResync = 30 * time.Second

// New returns the component for cfg.
func New(cfg Config) *Network {
	if cfg.BridgeName == "" {
		cfg.BridgeName = "kubox0"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.LookPath == nil {
		cfg.LookPath = exec.LookPath
	}
	return &Network{cfg: cfg}
}

func (n *Network) Name() string { return "network" }

// ConfFile is the CNI config file kubox owns.
func (n *Network) ConfFile() string { return filepath.Join(n.cfg.ConfDir, "10-kubox.conflist") }

func (n *Network) Init(ctx context.Context) error {
	for _, d := range []string{n.cfg.ConfDir, n.cfg.IPAMDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}

// Start turns on IPv4 forwarding, which routed pod traffic needs, installs
// the masquerade rules before any pod can start, and writes the CNI config
// once the node has its pod CIDR.
func (n *Network) Start(ctx context.Context) error {
	if err := n.forwarding(); err != nil {
		return err
	}
	if err := n.masquerade(ctx); err != nil {
		return err
	}
	n.cni.Go(ctx, n.configure)
	return nil
}

func (n *Network) masquerade(ctx context.Context) error {
	backend := n.masqBackend()
	if backend == MasqNone {
		n.cfg.Log.Warn("neither nft nor iptables is installed: pods reach only the nodes and each other, and host ports do not work")
		return nil
	}
	if n.cfg.ClusterCIDR == nil {
		return nil
	}
	if err := ensureMasquerade(ctx, backend, n.cfg.ClusterCIDR, VXLANDevice); err != nil {
		return fmt.Errorf("pod masquerade: %w", err)
	}
	if backend == MasqNFTables {
		// One atomic transaction, so rewriting it never opens a gap; the
		// iptables fallback flushes and refills its chains, so it is
		// written at start only.
		n.masq.Go(ctx, "pod masquerade", n.resync)
	}
	return nil
}

// resync writes the table every MasqueradeResync (Start wrote it first)
// until ctx ends.
func (n *Network) resync(ctx context.Context) error {
	_ = wait.PollUntilContextCancel(ctx, MasqueradeResync, false, func(ctx context.Context) (bool, error) {
		if err := writeNFTables(ctx, n.cfg.ClusterCIDR, VXLANDevice); err != nil && ctx.Err() == nil {
			n.cfg.Log.Warn("pod masquerade: will retry", "err", err)
		}
		return false, nil
	})
	return nil
}

func (n *Network) forwarding() error {
	const fwd = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(fwd)
	if err != nil {
		return fmt.Errorf("read %s: %w", fwd, err)
	}
	if strings.TrimSpace(string(cur)) != "1" {
		if err := os.WriteFile(fwd, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable IPv4 forwarding: %w", err)
		}
		n.cfg.Log.Info("enabled IPv4 forwarding (net.ipv4.ip_forward=1)")
	}
	return nil
}

// configure waits for the node's pod CIDR and writes the CNI config for it.
func (n *Network) configure(ctx context.Context) error {
	var podCIDR string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		node, err := n.cfg.Client.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			podCIDR = node.Spec.PodCIDR
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s has no pod CIDR yet: %w", n.cfg.NodeName, context.Cause(ctx))
	}
	if dropped, err := dropStaleBridge(n.cfg.BridgeName, podCIDR); err != nil {
		return err
	} else if dropped {
		n.cfg.Log.Info("deleted bridge from an earlier pod CIDR", "bridge", n.cfg.BridgeName, "podCIDR", podCIDR)
	}
	data, backend, err := n.conflist(podCIDR)
	if err != nil {
		return err
	}
	if _, err := fsutil.WriteFileIfChanged(n.ConfFile(), data, 0o600); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	n.cfg.Log.Info("pod network configured", "podCIDR", podCIDR, "bridge", n.cfg.BridgeName, "masquerade", backend,
		"notMasqueraded", n.cfg.ClusterCIDR)
	return nil
}

// Ready waits for the CNI config to be written, then for the node to turn
// Ready.
func (n *Network) Ready(ctx context.Context) error {
	if err := n.cni.Wait(ctx); err != nil {
		return err
	}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		node, err := n.cfg.Client.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{})
		return err == nil && kubelet.NodeReady(node), nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w", n.cfg.NodeName, err)
	}
	return nil
}

// masqBackend picks how kubox masquerades pod traffic and the portmap
// plugin maps host ports: nftables where the nft tool exists, iptables
// otherwise, none when neither is installed (pods then reach only the
// nodes and each other).
func (n *Network) masqBackend() string {
	if _, err := n.cfg.LookPath("nft"); err == nil {
		return MasqNFTables
	}
	if _, err := n.cfg.LookPath("iptables"); err == nil {
		return MasqIPTables
	}
	return MasqNone
}

func (n *Network) conflist(podCIDR string) ([]byte, string, error) {
	backend := n.masqBackend()
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      n.cfg.BridgeName,
		"isGateway":   true,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": n.cfg.IPAMDir,
		},
	}
	// No ipMasq: the plugin would masquerade everything leaving the node's
	// own pod CIDR, other nodes' pods included; kubox's own rules
	// (ensureMasquerade) spare the whole cluster CIDR.
	plugins := []any{bridge}
	if backend != MasqNone {
		plugins = append(plugins, map[string]any{
			"type":         "portmap",
			"backend":      backend,
			"capabilities": map[string]bool{"portMappings": true},
		})
	}
	data, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kubox",
		"plugins":    plugins,
	}, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("render CNI config: %w", err)
	}
	return data, backend, nil
}

// Stop removes the masquerade rules with CleanupOnStop.
func (n *Network) Stop(ctx context.Context) error {
	if err := errors.Join(n.cni.Stop(ctx), n.masq.Stop(ctx)); err != nil {
		return err
	}
	if !n.cfg.CleanupOnStop {
		return nil
	}
	if err := RemoveMasquerade(ctx, n.cfg.LookPath); err != nil {
		return fmt.Errorf("remove pod masquerade: %w", err)
	}
	return nil
}
