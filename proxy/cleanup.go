package proxy

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/kubernetes/pkg/proxy/iptables"
	"k8s.io/kubernetes/pkg/proxy/ipvs"
	"k8s.io/kubernetes/pkg/proxy/nftables"

	"github.com/kubox/kubox/proxy/mode"
)

// Cleanup removes the rules a proxy mode made: nftables (the kube-proxy
// table), iptables (the KUBE-* chains) or ipvs (virtual servers, ipsets,
// the kube-ipvs0 interface and its iptables chains); "" removes all three.
// Each upstream cleanup skips what is not there (ipvs, when the kernel has
// no ip_vs). It returns an error when any of them failed; the details are in
// the log.
func Cleanup(ctx context.Context, m mode.Mode) error {
	var failed []string
	if (m == "" || m == mode.NFTables) && nftables.CleanupLeftovers(ctx) {
		failed = append(failed, "nftables")
	}
	if (m == "" || m == mode.IPVS) && ipvs.CleanupLeftovers(ctx) {
		failed = append(failed, "ipvs")
	}
	if (m == "" || m == mode.IPTables) && iptables.CleanupLeftovers(ctx) {
		failed = append(failed, "iptables")
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not remove all service proxy rules (%v); see the log above", failed)
	}
	return nil
}

// cleanupUnshared removes, before mode m starts, the rules of the modes
// that share nothing with it, as kube-proxy does: iptables and ipvs rules
// for nftables; nftables rules for iptables and ipvs. (iptables and ipvs
// share chain names, and each proxier rewrites those chains itself.)
func cleanupUnshared(ctx context.Context, m mode.Mode) error {
	var err error
	if m == mode.NFTables {
		err = errors.Join(Cleanup(ctx, mode.IPTables), Cleanup(ctx, mode.IPVS))
	} else {
		err = Cleanup(ctx, mode.NFTables)
	}
	if err != nil {
		return fmt.Errorf("remove the rules of other proxy modes: %w", err)
	}
	return nil
}
