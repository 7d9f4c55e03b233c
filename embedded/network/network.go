// Package network gives this node's pods their network: once the controller
// manager has assigned the node a pod CIDR, it writes a bridge CNI config for
// it (containerd picks it up and the node turns Ready) and turns on IP
// forwarding.
package network

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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
	Log        *slog.Logger
	// LookPath finds the masquerade backends; nil means exec.LookPath.
	LookPath func(string) (string, error)
}

// Network is the pod network component.
type Network struct {
	cfg Config
}

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

// Start turns on IPv4 forwarding, which routed pod traffic needs.
func (n *Network) Start(ctx context.Context) error {
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

// Ready waits for the node's pod CIDR, writes the CNI config for it, then
// waits for the node to turn Ready.
func (n *Network) Ready(ctx context.Context) error {
	var podCIDR string
	for {
		node, err := n.cfg.Client.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			podCIDR = node.Spec.PodCIDR
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s has no pod CIDR yet: %w", n.cfg.NodeName, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
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
	n.cfg.Log.Info("pod network configured", "podCIDR", podCIDR, "bridge", n.cfg.BridgeName, "masquerade", backend)
	for {
		node, err := n.cfg.Client.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{})
		if err == nil && kubelet.NodeReady(node) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready: %w", n.cfg.NodeName, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// masqBackend picks how the CNI plugins masquerade pod traffic and map host
// ports: nftables where the nft tool exists, iptables otherwise, none when
// neither is installed (pods then reach only the node and each other).
func (n *Network) masqBackend() string {
	if _, err := n.cfg.LookPath("nft"); err == nil {
		return "nftables"
	}
	if _, err := n.cfg.LookPath("iptables"); err == nil {
		return "iptables"
	}
	return "none"
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
	plugins := []any{bridge}
	if backend != "none" {
		bridge["ipMasq"] = true
		bridge["ipMasqBackend"] = backend
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

func (n *Network) Stop(ctx context.Context) error { return nil }
