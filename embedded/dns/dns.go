// Package dns serves cluster DNS from inside kubox: CoreDNS as a library
// (its server core and the kubernetes, forward, cache, errors, hosts,
// reload, health, ready, log and bind plugins) listening on the node's
// address, fed by the local apiserver, with no image to pull. It also keeps
// the selector-less kube-system/kube-dns Service and this node's
// EndpointSlice for it, so the service proxy sends the cluster DNS address
// to every server's listener.
//
// CoreDNS runs on caddy, which keeps its instances and loaders in package
// state: one process can run one such server, which is what kubox needs.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/fsutil"
)

// Config is what kubox decides for its DNS server.
type Config struct {
	NodeName      string
	NodeIP        net.IP // the listener binds here
	Port          int    // default 53; tests use another
	ClusterDNS    net.IP // the kube-dns Service's ClusterIP
	ClusterDomain string // default cluster.local
	// ClusterCIDR (the pods) and AllowCIDRs (the operator's, CIDRs or
	// addresses) may query, as may loopback, this node and the cluster's
	// Nodes; everyone else is refused (see access.go).
	ClusterCIDR *net.IPNet
	AllowCIDRs  []string
	// Kubeconfig is read by CoreDNS's kubernetes plugin; Client manages
	// the kube-dns Service and EndpointSlices.
	Kubeconfig string
	Client     kubernetes.Interface
	// ResolvConf lists the upstream resolvers (default /etc/resolv.conf);
	// HostsFile is served before them (default /etc/hosts; "-" for none).
	ResolvConf string
	HostsFile  string
	// OverrideFile holds the operator's extra server blocks (a Corefile
	// fragment); missing means none. CorefilePath is where kubox writes the
	// Corefile it runs, for operators to read.
	OverrideFile string
	CorefilePath string
	// ReloadInterval is how often CoreDNS's reload plugin looks for a
	// changed configuration (default 30s; the plugin's minimum is 2s).
	ReloadInterval time.Duration
	Log            *slog.Logger
}

// DNS is the cluster DNS component.
type DNS struct {
	cfg    Config
	boxes  *boxes // the cluster's Nodes' addresses, kept by watchNodes
	input  caddy.CaddyfileInput
	cancel context.CancelFunc
	done   chan struct{}
	// started is closed once CoreDNS's start returned, with startErr.
	started  chan struct{}
	startErr error
}

var (
	_ component.Component   = (*DNS)(nil)
	_ component.Initializer = (*DNS)(nil)
	_ component.Readier     = (*DNS)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *DNS {
	if cfg.Port == 0 {
		cfg.Port = 53
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	switch cfg.HostsFile {
	case "":
		cfg.HostsFile = "/etc/hosts"
	case "-":
		cfg.HostsFile = ""
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &DNS{cfg: cfg, boxes: &boxes{}}
}

func (d *DNS) Name() string { return "dns" }

// Addr is the DNS listener's address.
func (d *DNS) Addr() string { return net.JoinHostPort(d.cfg.NodeIP.String(), strconv.Itoa(d.cfg.Port)) }

// Init renders the Corefile from the upstream resolvers and the operator's
// override, and checks it the way CoreDNS would, without starting anything.
func (d *DNS) Init(ctx context.Context) error {
	body, err := d.render(true)
	if err != nil {
		return err
	}
	d.input = caddy.CaddyfileInput{Contents: body, Filepath: d.cfg.CorefilePath, ServerTypeName: "dns"}
	err = caddy.ValidateAndExecuteDirectives(d.input, nil, true)
	klog.ClearLogger() // see keepKlog
	if err != nil {
		return fmt.Errorf("DNS configuration from %s: %v (fix that file, or move it aside to run with kubox's defaults)", d.cfg.OverrideFile, err)
	}
	if _, err := fsutil.WriteFileIfChanged(d.cfg.CorefilePath, body, 0o600); err != nil {
		return fmt.Errorf("write Corefile: %w", err)
	}
	return nil
}

// render builds the Corefile from the current override and resolvers.
func (d *DNS) render(logIt bool) ([]byte, error) {
	extra, err := ParseOverride(d.cfg.OverrideFile, d.cfg.Port, d.cfg.ClusterDomain)
	if err != nil {
		return nil, err
	}
	ups, dropped, err := Upstreams(d.cfg.ResolvConf, d.cfg.NodeIP, d.cfg.Port, d.cfg.ClusterDNS)
	if err != nil {
		return nil, err
	}
	if logIt {
		if len(dropped) > 0 {
			d.cfg.Log.Warn("left out upstream resolvers that point back at cluster DNS (a loop)", "resolvConf", d.cfg.ResolvConf, "dropped", dropped)
		}
		if len(ups) == 0 {
			d.cfg.Log.Warn("no upstream resolvers: names outside the cluster will not resolve", "resolvConf", d.cfg.ResolvConf)
		}
		d.cfg.Log.Info("DNS configuration", "listen", d.Addr(), "upstreams", ups, "extraZones", len(extra), "corefile", d.cfg.CorefilePath)
	}
	return d.Corefile(ups, extra), nil
}

// caddyOnce guards caddy's process-wide setup: its loader list (the reload
// plugin asks the loaders for the new configuration) and quiet output.
var caddyOnce sync.Once

// loaders maps nothing but the one running DNS: caddy's loader is global,
// so it calls back into whichever DNS registered last.
var (
	loaderMu  sync.Mutex
	loaderDNS *DNS
	loaderErr string // last reload error logged, so a bad file is logged once
)

func (d *DNS) setupCaddy() {
	caddyOnce.Do(func() {
		caddy.Quiet = true
		dnsserver.Quiet = true
		caddy.AppName, caddy.AppVersion = "kubox-dns", "coredns"
		// keepKlog: the kubernetes plugin's setup routes klog, process-wide,
		// into CoreDNS's log (every kubelet and apiserver line would read
		// "plugin/kubernetes"). Undo it whenever an instance has started
		// (at start and after each reload), back to the text output the
		// upstream components set.
		caddy.RegisterEventHook("kubox-klog", func(ev caddy.EventName, _ interface{}) error {
			if ev == caddy.InstanceStartupEvent {
				klog.ClearLogger()
			}
			return nil
		})
		caddy.RegisterCaddyfileLoader("kubox", caddy.LoaderFunc(func(serverType string) (caddy.Input, error) {
			loaderMu.Lock()
			cur := loaderDNS
			loaderMu.Unlock()
			if cur == nil || serverType != "dns" {
				return nil, nil
			}
			body, err := cur.render(false)
			loaderMu.Lock()
			logIt := err != nil && err.Error() != loaderErr
			loaderErr = ""
			if err != nil {
				loaderErr = err.Error()
			}
			loaderMu.Unlock()
			if err != nil {
				// The reload plugin keeps the running configuration.
				if logIt {
					cur.cfg.Log.Error("DNS configuration not reloaded; the running one stays", "err", err)
				}
				return nil, err
			}
			if _, err := fsutil.WriteFileIfChanged(cur.cfg.CorefilePath, body, 0o600); err != nil {
				cur.cfg.Log.Warn("could not write Corefile", "err", err)
			}
			return caddy.CaddyfileInput{Contents: body, Filepath: cur.cfg.CorefilePath, ServerTypeName: "dns"}, nil
		}))
	})
	loaderMu.Lock()
	loaderDNS = d
	loaderMu.Unlock()
}

// Start starts the DNS server, then keeps the kube-dns Service and this
// node's EndpointSlice in place. CoreDNS starts in the background: its
// kubernetes plugin's start blocks until its informers have synced
// (checked every 100 ms), which held up the start of every component after
// this one, the kubelet's prerequisites among them. Ready waits for it.
func (d *DNS) Start(ctx context.Context) error {
	d.setupCaddy()
	ctx, d.cancel = context.WithCancel(ctx)
	d.started, d.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.done)
		_, err := caddy.Start(d.input)
		if err != nil {
			caddy.Stop()
			d.startErr = fmt.Errorf("start DNS server on %s: %w", d.Addr(), err)
		}
		close(d.started)
		if err != nil {
			return
		}
		stopNodes := d.watchNodes(ctx)
		defer stopNodes()
		d.keepService(ctx)
	}()
	return nil
}

// Ready waits until the listener answers the API server's own Service name,
// which means the kubernetes plugin has synced with the apiserver.
func (d *DNS) Ready(ctx context.Context) error {
	select {
	case <-d.started:
		if d.startErr != nil {
			return d.startErr
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	name := "kubernetes.default.svc." + d.cfg.ClusterDomain + "."
	var last error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		last = d.probe(ctx, name)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("DNS on %s does not answer %s: %v", d.Addr(), name, last)
	}
	return nil
}

func (d *DNS) probe(ctx context.Context, name string) error {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.ExchangeContext(ctx, m, d.Addr())
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("answer %s with %d records", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	return nil
}

// Stop marks this node's DNS endpoint not ready, then stops CoreDNS.
func (d *DNS) Stop(ctx context.Context) error {
	if d.cancel != nil {
		d.cancel()
		select {
		case <-d.done:
		case <-ctx.Done():
		}
	}
	var errs []error
	for _, inst := range caddy.Instances() {
		for _, err := range inst.ShutdownCallbacks() {
			errs = append(errs, err)
		}
	}
	if err := caddy.Stop(); err != nil {
		errs = append(errs, err)
	}
	loaderMu.Lock()
	if loaderDNS == d {
		loaderDNS = nil
	}
	loaderMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop DNS: %w", err)
	}
	return nil
}
