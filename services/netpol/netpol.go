// Package netpol enforces Kubernetes NetworkPolicies on this box's pods.
// It watches every Pod, Namespace and NetworkPolicy of the cluster,
// compiles them (Compile, a pure function) into chains, sets and verdict
// maps in kubox's own nftables table, and writes them in one nft
// transaction (Render) whenever something changed. Every box filters its
// own pods, both directions, with the cluster-wide pod addresses in its
// sets, so a policy on one box's pods also filters traffic from another
// box's pods, whichever way it crossed (host routes or VXLAN).
//
// Why this and not an upstream controller: kube-network-policies hands
// packets to user space through the nftables queue statement, which this
// kernel lacks (CONFIG_NFT_QUEUE), and the kube-router release at hand has
// reported security flaws. Rules in kubox's table need no extra process and
// go away with the rest of the table.
package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/kubox/kubox/component"
)

// Table is kubox's nftables table (family ip), shared with the pod
// network's masquerade; this package owns only the objects named Prefix*.
const Table = "kubox"

// Config is one box's policy controller.
type Config struct {
	NodeName string
	Client   kubernetes.Interface
	// CleanupOnStop removes the rules when the component stops.
	CleanupOnStop bool
	Log           *slog.Logger
	// Resync is how often the rules are written even when nothing changed
	// (something may have flushed them); 0 means 30 s.
	Resync time.Duration
}

// Controller is the network policy component.
type Controller struct {
	cfg    Config
	run    component.Goroutine
	synced chan struct{}
	once   sync.Once
}

var (
	_ component.Component = (*Controller)(nil)
	_ component.Readier   = (*Controller)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	return &Controller{cfg: cfg, synced: make(chan struct{})}
}

func (c *Controller) Name() string { return "network-policy" }

// Start watches pods, namespaces and policies and rewrites the rules on
// every change.
func (c *Controller) Start(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, Table)
	if err != nil {
		return fmt.Errorf("network policies need nftables (install nft, or set disable-network-policy): %w", err)
	}
	ensureBridgeNetfilter(c.cfg.Log)
	factory := informers.NewSharedInformerFactory(c.cfg.Client, 0)
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	pols := factory.Networking().V1().NetworkPolicies()
	kick := make(chan struct{}, 1)
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), pols.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("watch for network policies: %w", err)
		}
	}
	s := &syncer{nft: nft, node: c.cfg.NodeName, pods: pods.Lister(), nss: nss.Lister(), pols: pols.Lister(), log: c.cfg.Log}
	c.run.Go(ctx, "network policy controller", func(ctx context.Context) error {
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced, nss.Informer().HasSynced, pols.Informer().HasSynced) {
			return nil
		}
		resync := time.NewTicker(c.cfg.Resync)
		defer resync.Stop()
		force := true
		for {
			if err := s.sync(ctx, force); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.cfg.Log.Warn("network policies: will retry", "err", err)
				// Retry soon; a kick or the ticker also retries.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
				force = true
				continue
			}
			c.once.Do(func() {
				c.cfg.Log.Info("network policies enforced", "policies", s.policies)
				close(c.synced)
			})
			force = false
			select {
			case <-ctx.Done():
				return nil
			case <-kick:
			case <-resync.C:
				force = true
			}
		}
	})
	return nil
}

// Ready waits for the first complete write of the rules.
func (c *Controller) Ready(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("network policies not written yet: %w", ctx.Err())
	}
}

// Stop ends the controller and, with CleanupOnStop, removes its rules.
func (c *Controller) Stop(ctx context.Context) error {
	if err := c.run.Stop(ctx); err != nil {
		return err
	}
	if !c.cfg.CleanupOnStop {
		return nil
	}
	return Remove(ctx)
}

// syncer compiles and writes; it remembers the last ruleset written, so an
// event that changes nothing (a pod's status) writes nothing.
type syncer struct {
	nft  knftables.Interface
	node string
	pods interface {
		List(labels.Selector) ([]*corev1.Pod, error)
	}
	nss interface {
		List(labels.Selector) ([]*corev1.Namespace, error)
	}
	pols interface {
		List(labels.Selector) ([]*networkingv1.NetworkPolicy, error)
	}
	log      *slog.Logger
	last     string
	policies int // in the last ruleset written
}

func (s *syncer) sync(ctx context.Context, force bool) error {
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	nss, err := s.nss.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	pols, err := s.pols.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list network policies: %w", err)
	}
	rs := Compile(Input{NodeName: s.node, Pods: pods, Namespaces: nss, Policies: pols})
	// What a fresh table would get says what is enforced.
	key := s.nft.NewTransaction()
	Render(key, rs, Existing{})
	text := key.String()
	if !force && text == s.last {
		return nil
	}
	old, err := existing(ctx, s.nft)
	if err != nil {
		return err
	}
	tx := s.nft.NewTransaction()
	Render(tx, rs, old)
	start := time.Now()
	if err := s.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("write network policy rules (nftables table ip %s): %w", Table, err)
	}
	s.last, s.policies = text, len(pols)
	s.log.Debug("network policy rules written", "policies", len(pols), "isolatedIngress", len(rs.Ingress),
		"isolatedEgress", len(rs.Egress), "took", time.Since(start))
	return nil
}

// existing lists this package's objects in kubox's table (none when the
// table does not exist).
func existing(ctx context.Context, nft knftables.Interface) (Existing, error) {
	old, _, err := listed(ctx, nft)
	return old, err
}

// listed returns this package's objects in kubox's table and whether the
// table holds anything else.
func listed(ctx context.Context, nft knftables.Interface) (Existing, bool, error) {
	var out Existing
	others := false
	for _, l := range []struct {
		kind string
		to   *[]string
	}{{"chains", &out.Chains}, {"sets", &out.Sets}, {"maps", &out.Maps}} {
		names, err := nft.List(ctx, l.kind)
		if err != nil && !knftables.IsNotFound(err) {
			return out, false, fmt.Errorf("list nftables %s of table ip %s: %w", l.kind, Table, err)
		}
		*l.to = Owned(names)
		others = others || len(*l.to) < len(names)
	}
	return out, others, nil
}

// Remove deletes this package's objects from kubox's table, in one
// transaction; a missing table is nothing to do.
func Remove(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, Table)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	old, others, err := listed(ctx, nft)
	if err != nil {
		return err
	}
	if len(old.Chains)+len(old.Sets)+len(old.Maps) == 0 {
		return nil
	}
	tx := nft.NewTransaction()
	if !others {
		// Only ours: the pod network, which made the table, has already
		// stopped and deleted it (it stops first), and this run re-made it.
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			return fmt.Errorf("remove network policy rules (table ip %s): %w", Table, err)
		}
		return nil
	}
	for _, c := range old.Chains {
		tx.Flush(&knftables.Chain{Name: c})
	}
	for _, m := range old.Maps {
		tx.Flush(&knftables.Map{Name: m})
	}
	for _, c := range old.Chains {
		tx.Delete(&knftables.Chain{Name: c})
	}
	for _, s := range old.Sets {
		tx.Delete(&knftables.Set{Name: s})
	}
	for _, m := range old.Maps {
		tx.Delete(&knftables.Map{Name: m})
	}
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("remove network policy rules from table ip %s: %w", Table, err)
	}
	return nil
}

// ensureBridgeNetfilter turns on netfilter for bridged traffic: without it
// traffic between two pods of this box never reaches the forward hook.
// The service proxy does the same; it may be disabled.
func ensureBridgeNetfilter(log *slog.Logger) {
	const brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	cur, err := os.ReadFile(brnf)
	if err != nil {
		log.Warn("br_netfilter is not loaded: traffic between pods of the same box is not filtered by network policies; modprobe br_netfilter")
		return
	}
	if strings.TrimSpace(string(cur)) != "1" {
		if err := os.WriteFile(brnf, []byte("1\n"), 0o644); err != nil {
			log.Warn("could not enable net.bridge.bridge-nf-call-iptables", "err", err)
		}
	}
}
