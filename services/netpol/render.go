package netpol

import (
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// Existing is what of this package's objects kubox's table holds now.
type Existing struct {
	Chains, Sets, Maps []string
}

// Render adds to tx what replaces this package's objects in kubox's table
// with rs, as one transaction: the kernel applies it all or nothing, so no
// packet ever sees a half-written ruleset. Everything is flushed and
// re-added: the whole ruleset of a box is small (a few thousand lines for
// hundreds of policies and pods), and a rewrite needs no diffing.
//
// The traffic path: forward (pod to pod, pod to elsewhere) and input (pod
// to this box) accept replies (conntrack), send a local pod's new traffic
// through its egress group chain (verdict map by source IP), and then every
// allowed packet through np-to, which sends traffic to a local pod through
// its ingress group chain (verdict map by destination IP). A group chain
// jumps to the chain of each policy that selects the pod and drops what
// none allowed. Traffic from this box to its pods (output hook) is never
// filtered: kubelet probes pass.
func Render(tx *knftables.Transaction, rs *Ruleset, old Existing) {
	tx.Add(&knftables.Table{})
	for _, c := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{forwardChain, knftables.ForwardHook}, {inputChain, knftables.InputHook}} {
		ch := &knftables.Chain{
			Name: c.name, Type: knftables.PtrTo(knftables.FilterType),
			Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(knftables.FilterPriority),
			Comment: knftables.PtrTo("kubox: network policies"),
		}
		tx.Add(ch)
		tx.Flush(ch)
	}
	for _, m := range []string{ingressMap, egressMap} {
		tx.Add(&knftables.Map{Name: m, Type: verdictType})
		tx.Flush(&knftables.Map{Name: m})
	}
	// Empty the old chains first: they hold the references (jumps, set
	// lookups) that would keep the deletes below from working.
	for _, c := range old.Chains {
		if c != forwardChain && c != inputChain {
			tx.Flush(&knftables.Chain{Name: c})
		}
	}
	for _, c := range old.Chains {
		if c != forwardChain && c != inputChain {
			tx.Delete(&knftables.Chain{Name: c})
		}
	}
	for _, s := range old.Sets {
		tx.Delete(&knftables.Set{Name: s})
	}
	for _, m := range old.Maps {
		if m != ingressMap && m != egressMap {
			tx.Delete(&knftables.Map{Name: m})
		}
	}

	for _, name := range sortedKeys(rs.Sets) {
		s := rs.Sets[name]
		tx.Add(&knftables.Set{Name: name, Type: s.Type})
		for _, e := range s.Elements {
			tx.Add(&knftables.Element{Set: name, Key: e})
		}
	}
	// Chains before the rules that jump to them.
	tx.Add(&knftables.Chain{Name: toChain})
	names := sortedKeys(rs.Chains)
	for _, name := range names {
		tx.Add(&knftables.Chain{Name: name})
	}
	for _, name := range names {
		for _, r := range rs.Chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: r.String()})
		}
	}
	for _, m := range []struct {
		name string
		to   map[string]string
	}{{ingressMap, rs.Ingress}, {egressMap, rs.Egress}} {
		for _, ip := range sortedKeys(m.to) {
			tx.Add(&knftables.Element{Map: m.name, Key: []string{ip}, Value: []string{"goto " + m.to[ip]}})
		}
	}
	tx.Add(&knftables.Rule{Chain: toChain, Rule: "ip daddr vmap @" + ingressMap})
	// Explicit: np-to is entered by goto from a policy chain that a group
	// chain jumped to, and falling off its end would return to that group
	// chain and its drop.
	tx.Add(&knftables.Rule{Chain: toChain, Rule: "accept"})
	for _, base := range []string{forwardChain, inputChain} {
		tx.Add(&knftables.Rule{Chain: base, Rule: "ct state established,related accept"})
		tx.Add(&knftables.Rule{Chain: base, Rule: "ip saddr vmap @" + egressMap})
		tx.Add(&knftables.Rule{Chain: base, Rule: "goto " + toChain})
	}
}

// Owned keeps the names of this package's objects.
func Owned(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			out = append(out, n)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
