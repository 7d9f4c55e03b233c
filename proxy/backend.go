package proxy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/events"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"k8s.io/kubernetes/pkg/proxy"
	proxyconfigscheme "k8s.io/kubernetes/pkg/proxy/apis/config/scheme"
	"k8s.io/kubernetes/pkg/proxy/config"
	"k8s.io/kubernetes/pkg/proxy/healthcheck"
	"k8s.io/kubernetes/pkg/proxy/iptables"
	"k8s.io/kubernetes/pkg/proxy/ipvs"
	utilipset "k8s.io/kubernetes/pkg/proxy/ipvs/ipset"
	utilipvs "k8s.io/kubernetes/pkg/proxy/ipvs/util"
	"k8s.io/kubernetes/pkg/proxy/nftables"
	"k8s.io/kubernetes/pkg/proxy/runner"
	proxyutil "k8s.io/kubernetes/pkg/proxy/util"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"

	"github.com/kubox/kubox/proxy/mode"
)

var scheme = proxyconfigscheme.Scheme

// backend is one upstream proxier and how kubox drives it.
type backend struct {
	provider proxy.Provider
	// runner is the proxier's own sync runner. Upstream's SyncLoop runs it
	// until the process ends (wait.NeverStop); kubox runs it with a stop
	// channel so that a stopped proxy never syncs again, which would put
	// back the rules a cleanup just removed. nil: the proxier has no such
	// field (an upstream change) and SyncLoop is used.
	runner   *runner.BoundedFrequencyRunner
	health   *healthcheck.ProxyHealthServer
	node     *nodeGetter
	handlers sync.WaitGroup // config Run goroutines, which call into the proxier
	stopLoop chan struct{}
}

// nodeGetter gives the health server this node, from the node informer.
type nodeGetter struct {
	mu     sync.Mutex
	lister corelisters.NodeLister
	name   string
}

func (n *nodeGetter) Node() *v1.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lister == nil {
		return nil
	}
	node, err := n.lister.Get(n.name)
	if err != nil {
		return nil
	}
	return node.DeepCopy()
}

func newBackend(ctx context.Context, m mode.Mode, cfg Config, recorder events.EventRecorder) (*backend, error) {
	b := &backend{node: &nodeGetter{name: cfg.NodeName}, stopLoop: make(chan struct{})}
	// Not served over HTTP: kubox reads it for readiness and sync times.
	b.health = healthcheck.NewProxyHealthServer("", 2*cfg.SyncPeriod, b.node)
	local := proxyutil.NewDetectLocalByCIDR(cfg.ClusterCIDR.String())
	var err error
	switch m {
	case mode.NFTables:
		b.provider, err = nftables.NewProxier(ctx, v1.IPv4Protocol, cfg.SyncPeriod, cfg.MinSyncPeriod,
			cfg.MasqueradeAll, masqueradeBit, local, cfg.NodeName, cfg.NodeIP, recorder, b.health,
			cfg.NodePortAddresses, false)
	case mode.IPTables:
		b.provider, err = iptables.NewProxier(ctx, v1.IPv4Protocol, utiliptables.New(utiliptables.ProtocolIPv4),
			utilsysctl.New(), cfg.SyncPeriod, cfg.MinSyncPeriod, cfg.MasqueradeAll,
			false, // NodePorts on 127.0.0.1 need route_localnet=1; kubox serves them on the node IP
			masqueradeBit, local, cfg.NodeName, cfg.NodeIP, recorder, b.health, cfg.NodePortAddresses, false)
	case mode.IPVS:
		ipvsIface := utilipvs.New()
		if ipvsIface == nil {
			return nil, errors.New("the kernel refused an IPVS netlink handle (is ip_vs loaded?)")
		}
		ipsetIface := utilipset.New()
		if err := ipvs.CanUseIPVSProxier(ctx, ipvsIface, ipsetIface, cfg.Scheduler); err != nil {
			return nil, fmt.Errorf("IPVS with the %s scheduler does not work here: %w", cfg.Scheduler, err)
		}
		b.provider, err = ipvs.NewProxier(ctx, v1.IPv4Protocol, utiliptables.New(utiliptables.ProtocolIPv4),
			ipvsIface, ipsetIface, utilsysctl.New(), cfg.SyncPeriod, cfg.MinSyncPeriod,
			nil, cfg.StrictARP, 0, 0, 0, // IPVS timeouts: keep the kernel's
			cfg.MasqueradeAll, masqueradeBit, local, cfg.NodeName, cfg.NodeIP, recorder, b.health,
			cfg.Scheduler, cfg.NodePortAddresses, false)
	default:
		return nil, fmt.Errorf("unknown proxy mode %q", m)
	}
	if err != nil {
		return nil, err
	}
	b.runner = syncRunnerOf(b.provider)
	return b, nil
}

// syncRunnerOf reads the proxier's unexported syncRunner field (all three
// Linux proxiers have it). Reading it is the one way to stop upstream's
// loop; the unit tests fail if an upgrade renames it.
func syncRunnerOf(p proxy.Provider) *runner.BoundedFrequencyRunner {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("syncRunner")
	if !f.IsValid() || f.Type() != reflect.TypeOf((*runner.BoundedFrequencyRunner)(nil)) {
		return nil
	}
	return *(**runner.BoundedFrequencyRunner)(unsafe.Pointer(f.UnsafeAddr()))
}

// register connects the informers to the proxier, as kube-proxy's Run does.
func (b *backend) register(ctx context.Context, svc, ep, node, cidr informers.SharedInformerFactory, resync time.Duration) {
	svcCfg := config.NewServiceConfig(ctx, svc.Core().V1().Services(), resync)
	svcCfg.RegisterEventHandler(b.provider)
	epCfg := config.NewEndpointSliceConfig(ctx, ep.Discovery().V1().EndpointSlices(), resync)
	epCfg.RegisterEventHandler(b.provider)
	cidrCfg := config.NewServiceCIDRConfig(ctx, cidr.Networking().V1().ServiceCIDRs(), resync)
	cidrCfg.RegisterEventHandler(b.provider)
	nodes := node.Core().V1().Nodes()
	topo := config.NewNodeTopologyConfig(ctx, nodes, resync)
	topo.RegisterEventHandler(b.provider)
	b.node.mu.Lock()
	b.node.lister = nodes.Lister()
	b.node.mu.Unlock()
	for _, run := range []func(<-chan struct{}){svcCfg.Run, epCfg.Run, cidrCfg.Run} {
		b.handlers.Add(1)
		go func() {
			defer b.handlers.Done()
			run(ctx.Done())
		}()
	}
}

// loop runs the proxier's sync loop until stopLoop closes.
func (b *backend) loop() {
	if b.runner == nil {
		go b.provider.SyncLoop()
		<-b.stopLoop
		return
	}
	// SyncLoop marks the proxier healthy before its first sync; kubox's
	// readiness waits for a real sync instead.
	b.runner.Loop(b.stopLoop)
}

// synced tells whether the proxier has programmed the rules at least once
// since the informers synced.
func (b *backend) synced() bool {
	return !b.health.Health().LastUpdated.IsZero()
}
