// Package proxy runs the Kubernetes service proxy inside kubox: upstream
// kube-proxy's IPVS, nftables and iptables proxiers (k8s.io/kubernetes/pkg/proxy),
// built from their constructors with a context kubox owns, fed by informers
// that stop with it, and run as a kubox component.
//
// The mode comes from proxy/mode: IPVS where the kernel has ip_vs, nftables
// otherwise, or the mode the operator forced. kube-proxy's command is not
// used: it installs signal handlers, starts informers that never stop and
// exits the process when the node's pod CIDR changes.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"k8s.io/kubernetes/pkg/proxy/apis"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/fsutil"
	"github.com/kubox/kubox/proxy/mode"
)

// Defaults, as kube-proxy's.
const (
	DefaultSyncPeriod    = 30 * time.Second
	DefaultMinSyncPeriod = 1 * time.Second
	// masqueradeBit is the fwmark bit the proxiers use to mark packets for
	// SNAT (kube-proxy's default).
	masqueradeBit = 14
)

// Config is what kubox decides for the service proxy.
type Config struct {
	Mode      mode.Mode // requested mode; "" means auto
	Scheduler string    // IPVS scheduler; "" means rr

	NodeName    string
	NodeIP      net.IP     // IPv4: kubox nodes are single-stack
	ClusterCIDR *net.IPNet // pod traffic is told apart from outside traffic by it
	Client      kubernetes.Interface

	// SyncPeriod bounds how long rules may drift from the API (a full
	// resync on failure); MinSyncPeriod batches bursts of changes.
	SyncPeriod    time.Duration
	MinSyncPeriod time.Duration
	// MasqueradeAll SNATs all Service traffic, not only traffic from
	// outside the cluster CIDR.
	MasqueradeAll bool
	// NodePortAddresses are the CIDRs whose addresses serve NodePorts;
	// empty means the node IP only.
	NodePortAddresses []string
	// StrictARP makes the node answer ARP only for addresses on the
	// interface asked (IPVS mode binds every ClusterIP to kube-ipvs0), as
	// L2 load balancers such as MetalLB need.
	StrictARP bool
	// CleanupOnStop removes every rule the proxy made when it stops.
	CleanupOnStop bool
	// StateFile records the mode that ran, so a restart in another mode
	// removes the old mode's rules. "" keeps no record.
	StateFile string

	// Host is what the host offers; nil detects the live host.
	Host *mode.Host
	Log  *slog.Logger
}

// Validate checks cfg; each error is one line saying what to change.
func (c *Config) Validate() error {
	if _, err := mode.Parse(string(c.Mode)); err != nil {
		return err
	}
	if err := mode.CheckScheduler(c.Scheduler); err != nil {
		return err
	}
	if c.NodeName == "" {
		return errors.New("proxy: node name is empty")
	}
	if c.NodeIP.To4() == nil {
		return fmt.Errorf("proxy: node IP %q is not an IPv4 address", c.NodeIP)
	}
	if c.ClusterCIDR == nil || c.ClusterCIDR.IP.To4() == nil {
		return errors.New("proxy: the cluster CIDR must be an IPv4 range")
	}
	if c.Client == nil {
		return errors.New("proxy: no API client")
	}
	if c.SyncPeriod < 0 || c.MinSyncPeriod < 0 {
		return fmt.Errorf("--proxy-sync-period %s / --proxy-min-sync-period %s: must not be negative", c.SyncPeriod, c.MinSyncPeriod)
	}
	if c.SyncPeriod > 0 && c.MinSyncPeriod > c.SyncPeriod {
		return fmt.Errorf("--proxy-min-sync-period %s is longer than --proxy-sync-period %s: make it shorter", c.MinSyncPeriod, c.SyncPeriod)
	}
	if _, err := ParseNodePortAddresses(c.NodePortAddresses); err != nil {
		return err
	}
	return nil
}

// ParseNodePortAddresses checks NodePort address CIDRs (IPv4 only).
func ParseNodePortAddresses(cidrs []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range cidrs {
		_, n, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil || n.IP.To4() == nil {
			return nil, fmt.Errorf("--nodeport-addresses %q: not an IPv4 CIDR such as 192.168.1.0/24", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *Config) defaults() {
	if c.Scheduler == "" {
		c.Scheduler = mode.DefaultScheduler
	}
	if c.SyncPeriod == 0 {
		c.SyncPeriod = DefaultSyncPeriod
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if len(c.NodePortAddresses) == 0 {
		c.NodePortAddresses = []string{c.NodeIP.String() + "/32"}
	}
}

// Proxy is the service proxy component.
type Proxy struct {
	cfg    Config
	choice mode.Choice

	// setupDone is closed when the setup (see Setup) has ended, with its
	// error in setupErr; startDone when Start's background work has (the
	// setup, then the informers and the sync loop started).
	setupDone chan struct{}
	setupErr  error
	startDone chan struct{}

	mu       sync.Mutex
	cancel   context.CancelFunc
	done     chan struct{} // closed when the sync loop has returned
	backend  *backend
	informed []interface{ Shutdown() }
	events   events.EventBroadcaster
	tornDown bool
}

var (
	_ component.Component   = (*Proxy)(nil)
	_ component.Initializer = (*Proxy)(nil)
	_ component.Readier     = (*Proxy)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Proxy {
	cfg.defaults()
	return &Proxy{cfg: cfg}
}

func (p *Proxy) Name() string { return "proxy" }

// Choice is the mode chosen at Init, and why.
func (p *Proxy) Choice() mode.Choice { return p.choice }

// Init validates the configuration and chooses the mode: a forced mode the
// host cannot run fails here, before anything starts.
func (p *Proxy) Init(ctx context.Context) error {
	if err := p.cfg.Validate(); err != nil {
		return err
	}
	host := p.cfg.Host
	if host == nil {
		h := mode.Detect(mode.Probe{})
		host = &h
	}
	req, _ := mode.Parse(string(p.cfg.Mode))
	choice, err := mode.Select(req, p.cfg.Scheduler, *host)
	if err != nil {
		return err
	}
	p.choice = choice
	attrs := []any{"mode", choice.Mode, "why", choice.Reason}
	if choice.Mode == mode.IPVS {
		attrs = append(attrs, "scheduler", p.cfg.Scheduler)
	}
	p.cfg.Log.Info("service proxy mode", attrs...)
	return nil
}

// Setup returns the component that runs the part of the proxy's start that
// needs no API: removing the rules of other modes, the kernel settings and
// building the proxier, 0.1-0.3 s of nft and iptables calls. kubox runs it
// while the apiserver starts, so the proxy (which needs the apiserver)
// only has to fill and sync its rules. Without it, Start runs the setup
// first. Its Stop undoes the setup if the proxy itself never started.
func (p *Proxy) Setup() component.Component { return &setupStep{p: p} }

type setupStep struct{ p *Proxy }

var _ component.Readier = (*setupStep)(nil)

func (s *setupStep) Name() string { return "proxy-setup" }

func (s *setupStep) Start(ctx context.Context) error {
	s.p.beginSetup(ctx)
	return nil
}

func (s *setupStep) Ready(ctx context.Context) error { return s.p.waitSetup(ctx) }

// Stop runs after the proxy's Stop (the supervisor stops in reverse), which
// has then torn everything down already.
func (s *setupStep) Stop(ctx context.Context) error {
	select {
	case <-s.p.setupDone:
	case <-ctx.Done():
		return fmt.Errorf("the proxier's setup did not end: %w", ctx.Err())
	}
	return s.p.teardown(ctx)
}

// beginSetup runs setup in a goroutine; ctx bounds the proxier's run.
func (p *Proxy) beginSetup(ctx context.Context) {
	p.setupDone = make(chan struct{})
	go func() {
		defer close(p.setupDone)
		p.setupErr = p.setup(ctx)
	}()
}

func (p *Proxy) waitSetup(ctx context.Context) error {
	if p.setupDone == nil {
		return errors.New("proxy setup not started")
	}
	select {
	case <-p.setupDone:
		return p.setupErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start runs the setup unless Setup's component did, then starts the
// informers and the sync loop, in a goroutine: the supervisor meanwhile
// starts the components after this one (the kubelet among them). Ready
// returns its error.
func (p *Proxy) Start(ctx context.Context) error {
	if p.setupDone == nil {
		p.beginSetup(ctx)
	}
	p.startDone = make(chan struct{})
	go func() {
		defer close(p.startDone)
		select {
		case <-p.setupDone:
		case <-ctx.Done():
			return
		}
		if p.setupErr != nil {
			return
		}
		p.run(ctx)
	}()
	return nil
}

func (p *Proxy) setup(ctx context.Context) error {
	m := p.choice.Mode
	if err := p.cleanupOthers(ctx, m); err != nil {
		return err
	}
	// Recorded before the proxier makes any rule, so a run that fails
	// half-way still has its rules removed by a next run in another mode.
	if p.cfg.StateFile != "" {
		if err := fsutil.WriteFileAtomic(p.cfg.StateFile, []byte(string(m)+"\n"), 0o600); err != nil {
			return fmt.Errorf("record the proxy mode: %w", err)
		}
	}
	if err := p.hostSettings(); err != nil {
		return err
	}
	recorder, broadcaster, err := p.newRecorder(ctx)
	if err != nil {
		return err
	}
	b, err := newBackend(ctx, m, p.cfg, recorder)
	if err != nil {
		broadcaster.Shutdown()
		return fmt.Errorf("create the %s proxier: %w", m, err)
	}
	p.mu.Lock()
	p.backend, p.events = b, broadcaster
	p.mu.Unlock()
	return nil
}

// run starts the informers and the sync loop of the proxier setup built.
func (p *Proxy) run(ctx context.Context) {
	p.mu.Lock()
	b := p.backend
	runCtx, cancel := context.WithCancel(ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	p.mu.Unlock()
	p.watch(runCtx, b)
	go func() {
		defer close(p.done)
		b.loop()
	}()
}

// watch starts the informers that feed the proxier, all stopped by ctx.
func (p *Proxy) watch(ctx context.Context, b *backend) {
	resync := 15 * time.Minute // kube-proxy's configSyncPeriod
	client := p.cfg.Client
	// As kube-proxy: no Services that name another proxy, no headless ones.
	noProxyName, _ := labels.NewRequirement(apis.LabelServiceProxyName, selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(v1.IsHeadlessService, selection.DoesNotExist, nil)
	svcFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.NewSelector().Add(*noProxyName).String()
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.clusterIP", v1.ClusterIPNone).String()
		}))
	epFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.NewSelector().Add(*noHeadless).String()
		}))
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.cfg.NodeName).String()
		}))
	cidrFactory := informers.NewSharedInformerFactory(client, resync)
	b.register(ctx, svcFactory, epFactory, nodeFactory, cidrFactory, resync)
	for _, f := range []informers.SharedInformerFactory{svcFactory, epFactory, nodeFactory, cidrFactory} {
		f.Start(ctx.Done())
	}
	p.mu.Lock()
	p.informed = []interface{ Shutdown() }{svcFactory, epFactory, nodeFactory, cidrFactory}
	p.mu.Unlock()
}

func (p *Proxy) newRecorder(ctx context.Context) (events.EventRecorder, events.EventBroadcaster, error) {
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: p.cfg.Client.EventsV1()})
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("start the proxy's event recorder: %w", err)
	}
	return b.NewRecorder(scheme, "kube-proxy"), b, nil
}

// hostSettings turns on what Services need from the kernel: bridged pod
// traffic must pass netfilter (br_netfilter), or a pod reaching a Service
// backed by a pod on the same bridge gets replies it cannot match.
func (p *Proxy) hostSettings() error {
	const brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	cur, err := os.ReadFile(brnf)
	if err != nil {
		p.cfg.Log.Warn("br_netfilter is not loaded: pods reaching a Service whose backend is on the same node may fail; modprobe br_netfilter")
		return nil
	}
	if strings.TrimSpace(string(cur)) != "1" {
		if err := os.WriteFile(brnf, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable %s: %w", brnf, err)
		}
		p.cfg.Log.Info("enabled net.bridge.bridge-nf-call-iptables=1")
	}
	return nil
}

// Ready waits for the first full sync of the rules after the informers
// synced.
func (p *Proxy) Ready(ctx context.Context) error {
	if err := p.waitSetup(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	b := p.backend
	p.mu.Unlock()
	if b == nil {
		return errors.New("proxy not started")
	}
	// Every 10 ms: the kubelet waits on this, and synced is a cheap read.
	err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		return b.synced(), nil
	})
	if err != nil {
		return fmt.Errorf("the %s proxier has not synced its rules: %w", p.choice.Mode, err)
	}
	return nil
}

// Synced reports the time of the last successful sync of the rules.
func (p *Proxy) Synced() time.Time {
	p.mu.Lock()
	b := p.backend
	p.mu.Unlock()
	if b == nil {
		return time.Time{}
	}
	return b.health.Health().LastUpdated
}

// Stop stops the informers and the sync loop, then undoes the setup (see
// teardown).
func (p *Proxy) Stop(ctx context.Context) error {
	for _, started := range []chan struct{}{p.startDone, p.setupDone} {
		if started == nil {
			continue
		}
		select {
		case <-started:
		case <-ctx.Done():
			return fmt.Errorf("the proxier's setup did not end: %w", ctx.Err())
		}
	}
	p.mu.Lock()
	cancel, done, informed, b := p.cancel, p.done, p.informed, p.backend
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		// Informer handlers call into the proxier; they must be gone
		// before the sync loop ends (a sync request after that would
		// panic upstream).
		for _, f := range informed {
			f.Shutdown()
		}
		b.handlers.Wait()
		close(b.stopLoop)
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("the sync loop did not stop: %w", ctx.Err())
		}
	}
	return p.teardown(ctx)
}

// teardown undoes what the setup made, once: it stops the event recorder
// and, with CleanupOnStop, removes every rule of every mode.
func (p *Proxy) teardown(ctx context.Context) error {
	p.mu.Lock()
	ev, done := p.events, p.tornDown
	p.tornDown = true
	p.mu.Unlock()
	if ev == nil || done {
		return nil
	}
	ev.Shutdown()
	if !p.cfg.CleanupOnStop {
		p.cfg.Log.Info("service rules left in place", "mode", p.choice.Mode)
		return nil
	}
	if err := Cleanup(ctx, ""); err != nil {
		return err
	}
	if p.cfg.StateFile != "" {
		if err := os.Remove(p.cfg.StateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p.cfg.StateFile, err)
		}
	}
	p.cfg.Log.Info("service rules removed", "mode", p.choice.Mode)
	return nil
}

// cleanupOthers removes what other modes left: always the rules a mode
// never shares with m (as kube-proxy does), and everything of the mode
// recorded in the state file when it differs from m.
func (p *Proxy) cleanupOthers(ctx context.Context, m mode.Mode) error {
	prev := ""
	if p.cfg.StateFile != "" {
		data, err := os.ReadFile(p.cfg.StateFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read %s: %w", p.cfg.StateFile, err)
		}
		prev = strings.TrimSpace(string(data))
		if err := os.MkdirAll(filepath.Dir(p.cfg.StateFile), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(p.cfg.StateFile), err)
		}
	}
	if prev != "" && prev != string(m) {
		if err := Cleanup(ctx, mode.Mode(prev)); err != nil {
			return fmt.Errorf("remove the rules of the previous proxy mode %s: %w", prev, err)
		}
		p.cfg.Log.Info("removed the rules of the previous proxy mode", "previous", prev, "mode", m)
	}
	if err := cleanupUnshared(ctx, m); err != nil {
		return err
	}
	return nil
}
