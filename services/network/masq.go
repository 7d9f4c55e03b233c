package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
	"sigs.k8s.io/knftables"
)

// Masquerade backends, as masqBackend names them.
const (
	MasqNFTables = "nftables"
	MasqIPTables = "iptables"
	MasqNone     = "none"
)

// NFTTable is kubox's own nftables table (family ip): pod masquerade and
// the MSS clamp for the overlay. Nothing else writes to it.
const NFTTable = "kubox"

// iptables chains of the fallback (hosts without nft), jumped to from
// nat POSTROUTING and mangle FORWARD.
const (
	iptMasqChain utiliptables.Chain = "KUBOX-POSTROUTING"
	iptMSSChain  utiliptables.Chain = "KUBOX-FORWARD"
)

// multicast is never masqueraded (as the CNI plugins' ipMasq does).
const multicast = "224.0.0.0/4"

// nftRules adds kubox's table to tx, replacing what the table held:
// traffic from the pod network to anything outside it is masqueraded to the
// outgoing interface's address, pod-to-pod traffic (any node) is not; and
// TCP SYNs leaving through the VXLAN device get their MSS clamped to its
// path MTU, so pods with a full-size MTU never send segments the overlay
// must drop.
func nftRules(tx *knftables.Transaction, clusterCIDR *net.IPNet, vxlanDev string) {
	cidr := clusterCIDR.String()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("kubox: pod network masquerade")})
	post := &knftables.Chain{
		Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority),
	}
	tx.Add(post)
	tx.Flush(post)
	tx.Add(&knftables.Rule{
		Chain:   post.Name,
		Rule:    knftables.Concat("ip saddr", cidr, "ip daddr !=", cidr, "ip daddr !=", multicast, "masquerade"),
		Comment: knftables.PtrTo("pods to outside the pod network"),
	})
	fwd := &knftables.Chain{
		Name: "forward", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.ManglePriority),
	}
	tx.Add(fwd)
	tx.Flush(fwd)
	tx.Add(&knftables.Rule{
		Chain:   fwd.Name,
		Rule:    knftables.Concat("oifname", fmt.Sprintf("%q", vxlanDev), "tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu"),
		Comment: knftables.PtrTo("TCP MSS within the overlay's MTU"),
	})
}

// iptRule is one rule of the iptables fallback.
type iptRule struct {
	table utiliptables.Table
	chain utiliptables.Chain
	args  []string
}

// iptRules are the iptables fallback's rules, the same as nftRules: kubox's
// chains first (flushed and refilled), then the jumps to them.
func iptRules(clusterCIDR *net.IPNet, vxlanDev string) (chains, jumps []iptRule) {
	cidr := clusterCIDR.String()
	chains = []iptRule{
		{utiliptables.TableNAT, iptMasqChain, []string{"-d", cidr, "-j", "RETURN"}},
		{utiliptables.TableNAT, iptMasqChain, []string{"-d", multicast, "-j", "RETURN"}},
		{utiliptables.TableNAT, iptMasqChain, []string{"-j", "MASQUERADE"}},
		{utiliptables.TableMangle, iptMSSChain, []string{"-o", vxlanDev, "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--clamp-mss-to-pmtu"}},
	}
	jumps = []iptRule{
		{utiliptables.TableNAT, utiliptables.ChainPostrouting, []string{"-s", cidr, "-j", string(iptMasqChain)}},
		{utiliptables.TableMangle, utiliptables.ChainForward, []string{"-j", string(iptMSSChain)}},
	}
	return chains, jumps
}

// ensureMasquerade installs the rules with backend (MasqNFTables or
// MasqIPTables), and removes the other backend's leftovers.
func ensureMasquerade(ctx context.Context, backend string, clusterCIDR *net.IPNet, vxlanDev string) error {
	switch backend {
	case MasqNFTables:
		if err := writeNFTables(ctx, clusterCIDR, vxlanDev); err != nil {
			return err
		}
		_ = removeIPTables()
		return nil
	case MasqIPTables:
		ipt := utiliptables.New(utiliptables.ProtocolIPv4)
		chains, jumps := iptRules(clusterCIDR, vxlanDev)
		seen := map[utiliptables.Chain]bool{}
		for _, r := range chains {
			if !seen[r.chain] {
				seen[r.chain] = true
				if _, err := ipt.EnsureChain(r.table, r.chain); err != nil {
					return fmt.Errorf("iptables -t %s -N %s: %w", r.table, r.chain, err)
				}
				if err := ipt.FlushChain(r.table, r.chain); err != nil {
					return fmt.Errorf("iptables -t %s -F %s: %w", r.table, r.chain, err)
				}
			}
			if _, err := ipt.EnsureRule(utiliptables.Append, r.table, r.chain, r.args...); err != nil {
				return fmt.Errorf("iptables -t %s -A %s %v: %w", r.table, r.chain, r.args, err)
			}
		}
		for _, r := range jumps {
			if _, err := ipt.EnsureRule(utiliptables.Append, r.table, r.chain, r.args...); err != nil {
				return fmt.Errorf("iptables -t %s -A %s %v: %w", r.table, r.chain, r.args, err)
			}
		}
		_ = removeNFTables(ctx)
		return nil
	}
	return nil
}

// writeNFTables replaces kubox's table in one transaction.
func writeNFTables(ctx context.Context, clusterCIDR *net.IPNet, vxlanDev string) error {
	nft, err := knftables.New(knftables.IPv4Family, NFTTable)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := nft.NewTransaction()
	nftRules(tx, clusterCIDR, vxlanDev)
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("install nftables table ip %s: %w", NFTTable, err)
	}
	return nil
}

// RemoveMasquerade deletes kubox's nftables table and iptables chains,
// whichever exist.
func RemoveMasquerade(ctx context.Context, lookPath func(string) (string, error)) error {
	var errs []error
	if _, err := lookPath("nft"); err == nil {
		errs = append(errs, removeNFTables(ctx))
	}
	if _, err := lookPath("iptables"); err == nil {
		errs = append(errs, removeIPTables())
	}
	return errors.Join(errs...)
}

func removeNFTables(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, NFTTable)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete nftables table ip %s: %w", NFTTable, err)
	}
	return nil
}

func removeIPTables() error {
	ipt := utiliptables.New(utiliptables.ProtocolIPv4)
	var errs []error
	for _, c := range []struct {
		table        utiliptables.Table
		parent, mine utiliptables.Chain
	}{
		{utiliptables.TableNAT, utiliptables.ChainPostrouting, iptMasqChain},
		{utiliptables.TableMangle, utiliptables.ChainForward, iptMSSChain},
	} {
		if ok, _ := ipt.ChainExists(c.table, c.mine); !ok {
			continue
		}
		errs = append(errs, deleteJumps(ipt, c.table, c.parent, c.mine))
		if err := ipt.FlushChain(c.table, c.mine); err != nil {
			errs = append(errs, err)
		}
		if err := ipt.DeleteChain(c.table, c.mine); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteJumps deletes the rules of parent that jump to chain. Their match
// depends on the cluster CIDR of the run that made them, so they are found
// by their target.
func deleteJumps(ipt utiliptables.Interface, table utiliptables.Table, parent, chain utiliptables.Chain) error {
	var buf bytes.Buffer
	if err := ipt.SaveInto(table, &buf); err != nil {
		return fmt.Errorf("iptables-save -t %s: %w", table, err)
	}
	var errs []error
	for _, line := range strings.Split(buf.String(), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "-A" || f[1] != string(parent) || f[len(f)-2] != "-j" || f[len(f)-1] != string(chain) {
			continue
		}
		if err := ipt.DeleteRule(table, parent, f[2:]...); err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -D %s: %w", table, parent, err))
		}
	}
	return errors.Join(errs...)
}
