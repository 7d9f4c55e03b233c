package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/embedded/apiserver"
	"github.com/kubox/kubox/embedded/assets"
	"github.com/kubox/kubox/embedded/component"
	"github.com/kubox/kubox/embedded/containerd"
	"github.com/kubox/kubox/embedded/controllers"
	"github.com/kubox/kubox/embedded/csrapprover"
	"github.com/kubox/kubox/embedded/dns"
	"github.com/kubox/kubox/embedded/etcd"
	"github.com/kubox/kubox/embedded/etcdproxy"
	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/embedded/metrics"
	"github.com/kubox/kubox/embedded/network"
	"github.com/kubox/kubox/embedded/scheduler"
	"github.com/kubox/kubox/internal/fsutil"
	"github.com/kubox/kubox/internal/mounts"
)

// Timeouts for a whole start (unless Config.StartTimeout says otherwise)
// and a whole stop.
const (
	StartTimeout = 5 * time.Minute
	StopTimeout  = 25 * time.Second
)

// Server is one kubox node.
type Server struct {
	cfg   Config
	paths Paths
	log   *slog.Logger
	lock  *Lock
	sup   *component.Supervisor
	// join is set while a fresh join is under way, to undo it on failure.
	join *joinResult

	notify          Notifier
	adminKubeconfig string
	// live, once the node is ready, tells whether the apiserver answers
	// /livez; the systemd watchdog is pinged only while it does.
	live atomic.Pointer[func(context.Context) error]
}

// Notifier is told how the node is doing; *systemd.Notifier tells systemd
// (STATUS while starting, READY once the apiserver serves and the node is
// registered, STOPPING, watchdog pings).
type Notifier interface {
	Status(msg string)
	Ready(msg string)
	Stopping(msg string)
	RunWatchdog(ctx context.Context, healthy func(context.Context) error)
}

type nopNotifier struct{}

func (nopNotifier) Status(string)                                            {}
func (nopNotifier) Ready(string)                                             {}
func (nopNotifier) Stopping(string)                                          {}
func (nopNotifier) RunWatchdog(context.Context, func(context.Context) error) {}

// SetNotifier makes the server report its progress to n.
func (s *Server) SetNotifier(n Notifier) { s.notify = n }

// New returns a server for a completed cfg.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	return &Server{cfg: cfg, paths: cfg.Paths(), log: log, notify: nopNotifier{}}, nil
}

// Preflight checks what can be checked before any state is touched, then
// takes the data dir's lock. Call Release when done.
func (s *Server) Preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("kubox server must run as root (it manages containers, mounts and networking): run it with sudo or as root")
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", s.cfg.DataDir, err)
	}
	lock, err := AcquireLock(s.paths.Lock)
	if err != nil {
		return err
	}
	if err := s.cfg.CheckPorts(); err != nil {
		lock.Release()
		return err
	}
	s.lock = lock
	return nil
}

// Release drops the data dir lock.
func (s *Server) Release() { s.lock.Release() }

// Run starts the node, serves until ctx ends or a component fails, then
// stops everything. It returns the first failure.
func (s *Server) Run(ctx context.Context) error {
	begin := time.Now()
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	go s.notify.RunWatchdog(wdCtx, s.healthy)
	s.notify.Status("preparing certificates and components")
	if err := s.build(ctx); err != nil {
		if s.join != nil {
			err = s.undoJoin(s.join, err)
		}
		s.notify.Stopping("failed: " + err.Error())
		return err
	}
	s.sup.Status = s.notify.Status
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	startTimeout := s.cfg.StartTimeout
	if startTimeout <= 0 {
		startTimeout = StartTimeout
	}
	startCtx, cancelStart := context.WithTimeout(ctx, startTimeout)
	err := s.sup.Start(startCtx, runCtx)
	cancelStart()
	startFailed := err != nil
	if err != nil && ctx.Err() != nil {
		// Asked to stop while starting: a normal stop, not a failure.
		s.log.Info("stopping before start completed", "reason", context.Cause(ctx))
		s.notify.Stopping("stopping before start completed")
		err = nil
	} else if err == nil {
		took := time.Since(begin).Round(time.Millisecond)
		s.log.Info("kubox is ready", "node", s.cfg.NodeName, "took", took, "kubeconfig", s.cfg.WriteKubeconfig)
		s.live.Store(s.apiserverLive())
		s.notify.Ready(fmt.Sprintf("kubox is ready: node %s, started in %s", s.cfg.NodeName, took))
		err = s.sup.Wait(ctx)
		s.live.Store(nil)
		if err != nil {
			s.log.Error("component failed; stopping", "err", err)
			s.notify.Stopping("component failed; stopping: " + err.Error())
		} else {
			s.log.Info("stopping")
			s.notify.Stopping("stopping")
		}
	} else {
		s.notify.Stopping("start failed; stopping: " + err.Error())
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), StopTimeout)
	defer cancelStop()
	stopErr := s.sup.Stop(stopCtx)
	cancelRun()
	if s.cfg.StopPodsOnExit || s.cfg.DisableAgent {
		// Kept pods still use their rootfs and volume mounts, and the next
		// kubox adopts them as they are.
		s.cleanupMounts()
	}
	if startFailed && s.join != nil {
		// Only now: etcd no longer uses the dir that is moved aside.
		err = s.undoJoin(s.join, err)
	}
	if errors.Is(err, etcd.ErrRemoved) {
		if stopErr != nil {
			s.log.Warn("stop after the removal", "err", stopErr)
		}
		return &RemovedError{DataDir: s.cfg.DataDir}
	}
	return errors.Join(err, stopErr)
}

// healthy is the watchdog's check: while starting and stopping the process
// is alive by definition; once ready, the apiserver must answer /livez.
func (s *Server) healthy(ctx context.Context) error {
	if live := s.live.Load(); live != nil {
		return (*live)(ctx)
	}
	return nil
}

// apiserverLive returns a check of the apiserver's /livez through the admin
// kubeconfig.
func (s *Server) apiserverLive() *func(context.Context) error {
	client, err := adminClient(s.adminKubeconfig)
	check := func(ctx context.Context) error {
		if err != nil {
			return err
		}
		_, err := client.Discovery().RESTClient().Get().AbsPath("/livez").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("apiserver /livez: %w", err)
		}
		return nil
	}
	return &check
}

// cleanupMounts unmounts what the kubelet and containerd left behind (pod
// volumes, sandbox shm, the kubelet's bind mount of its root dir), so a
// stopped kubox leaves no mount under its dirs.
func (s *Server) cleanupMounts() {
	for _, dir := range []string{s.paths.Kubelet, s.paths.ContainerdState, s.paths.ContainerdRoot} {
		n, err := mounts.UnmountUnder(dir)
		if err != nil {
			s.log.Warn("could not unmount everything", "dir", dir, "err", err)
		}
		if n > 0 {
			s.log.Info("unmounted leftover mounts", "dir", dir, "count", n)
		}
	}
}

func (s *Server) apiURL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.HTTPSPort))
}

// build prepares files and assembles the components in start order.
func (s *Server) build(ctx context.Context) error {
	c, p := s.cfg, s.paths
	var join *joinResult
	if c.JoinURL != "" {
		var err error
		if join, err = s.prepareJoin(ctx); err != nil {
			return err
		}
		s.join = join
	}
	pki, err := bootstrap.Ensure(ctx, c.PKIConfig())
	if err != nil {
		return fmt.Errorf("bootstrap PKI: %w", err)
	}
	signerCert, err := pki.SignerCertFile()
	if err != nil {
		return err
	}
	if err := pki.WriteServingChain(); err != nil {
		return err
	}
	s.adminKubeconfig = pki.AdminKubeconfig
	etcdCfg := etcd.Config{
		Name: c.NodeName, DataDir: p.Etcd, NodeIP: c.NodeIP,
		ClientPort: c.EtcdClientPort, PeerPort: c.EtcdPeerPort,
		ServerCACert: pki.EtcdServerCACert, ServerCert: pki.EtcdServerCert, ServerKey: pki.EtcdServerKey,
		PeerCACert: pki.EtcdPeerCACert, PeerCert: pki.EtcdPeerCert, PeerKey: pki.EtcdPeerKey,
		ClientCert: pki.EtcdClientCert, ClientKey: pki.EtcdClientKey,
	}
	if join != nil {
		etcdCfg.InitialCluster, etcdCfg.ClusterState = join.initialCluster, "existing"
		if !join.promote {
			s.log.Info("joined as a non-voting etcd learner (hot standby): two voters would tolerate no loss; " +
				"join a third box (this one is then promoted) or run `kubox etcd promote`")
		}
	}
	et := etcd.New(etcdCfg)
	etcdURL := et.ClientURL()
	var etcdProxy *etcdproxy.Proxy
	// join.json too: a joined box may be restarted without --join.
	joined, _ := fsutil.Exists(filepath.Join(c.DataDir, joinStateFile))
	if c.JoinURL != "" || joined {
		// A joined box's member may be a learner now and a voter later, and
		// any other member may go: the apiserver reaches etcd through a
		// proxy that follows the membership (see embedded/etcdproxy). A
		// box that never joined is the first member, always a voter.
		tlsCfg, err := (&transport.TLSInfo{CertFile: pki.EtcdClientCert, KeyFile: pki.EtcdClientKey, TrustedCAFile: pki.EtcdServerCACert}).ClientConfig()
		if err != nil {
			return fmt.Errorf("etcd client TLS for the etcd proxy: %w", err)
		}
		members := func(ctx context.Context) ([]etcdproxy.Member, error) {
			ms, err := et.Members(ctx)
			out := make([]etcdproxy.Member, 0, len(ms))
			for _, m := range ms {
				out = append(out, etcdproxy.Member{Name: m.Name, Learner: m.Learner, ClientURLs: m.ClientURLs})
			}
			return out, err
		}
		if etcdProxy, err = etcdproxy.New(etcdproxy.Config{
			Name: c.NodeName, LocalURL: et.ClientURL(), Members: members, TLS: tlsCfg,
			Log: s.log.With("component", "etcd-proxy"),
		}); err != nil {
			return err
		}
		etcdURL = etcdProxy.URL()
	}
	api := apiserver.New(apiserver.Config{
		NodeIP: c.NodeIP, Port: c.HTTPSPort, ServiceCIDR: c.ServiceCIDR.String(), EtcdURL: etcdURL,
		ClusterCA: pki.CACert, ClientCA: pki.ClientCACert, RequestCA: pki.RequestHeaderCACert,
		ProxyCert: pki.FrontProxyClientCert, ProxyKey: pki.FrontProxyClientKey,
		ServingCert: pki.ServingChainFile(), ServingKey: pki.APIServerKey,
		EtcdCA: pki.EtcdServerCACert, EtcdCert: pki.EtcdClientCert, EtcdKey: pki.EtcdClientKey,
		KubeletCert: pki.APIServerKubeletClientCert, KubeletKey: pki.APIServerKubeletClientKey,
		SAKey: pki.ServiceAccountKey, SAPub: pki.ServiceAccountPub, Encryption: pki.EncryptionConfig,
		AdminCert: pki.AdminCert, AdminKey: pki.AdminKey, Log: s.log.With("component", "apiserver"),
	})
	client, err := adminClient(pki.AdminKubeconfig)
	if err != nil {
		return err
	}
	comps := []component.Component{et}
	if join != nil && join.promote {
		comps = append(comps, &promoter{res: join, log: s.log.With("component", "etcd-promote")})
	}
	if etcdProxy != nil {
		comps = append(comps, etcdProxy)
	}
	comps = append(comps, api,
		&publisher{client: client, pkiDir: p.PKI, settings: c.clusterSettings(), log: s.log.With("component", "join-bundle")},
		controllers.New(controllers.Config{
			Kubeconfig: pki.ControllerManagerKubeconfig, ClusterCIDR: c.ClusterCIDR.String(), ServiceCIDR: c.ServiceCIDR.String(),
			ClusterSigningCert: signerCert, ClusterSigningKey: pki.CAKey, RootCA: pki.CACert, SAKey: pki.ServiceAccountKey,
			NodeName: c.NodeName, Log: s.log,
		}),
		scheduler.New(scheduler.Config{Kubeconfig: pki.SchedulerKubeconfig, NodeName: c.NodeName, Log: s.log}),
	)
	if !c.DisableDNS {
		d, err := s.dnsComponent(pki.AdminKubeconfig)
		if err != nil {
			return err
		}
		comps = append(comps, d)
	}
	if !c.DisableAgent {
		if err := assets.Install(p.Bin); err != nil {
			return fmt.Errorf("install runtime binaries into %s: %w", p.Bin, err)
		}
		ctrd := containerd.New(containerd.Config{
			Binary: p.Bin + "/containerd",
			Root:   p.ContainerdRoot, State: p.ContainerdState, Socket: p.ContainerdSock,
			ConfigFile: p.ContainerdConfig, LogFile: p.ContainerdLog,
			BinDir: p.Bin, ShimPath: p.Bin + "/containerd-shim-runc-v2", RuncPath: p.Bin + "/runc",
			CNIBinDir: p.CNIBin, CNIConfDir: p.CNIConf,
			SandboxImage:        assets.PauseImage,
			ImportImages:        []func() (io.ReadCloser, error){assets.PauseImageArchive},
			RestrictOOMScoreAdj: !HasCapSysResource(),
			StopPodsOnExit:      c.StopPodsOnExit,
			Log:                 s.log.With("component", "containerd"),
		})
		// The proxy comes before the kubelet, so Services work when pods start.
		if px := s.proxyComponent(client); px != nil {
			comps = append(comps, px)
		}
		ag, err := s.airgapComponent()
		if err != nil {
			return err
		}
		comps = append(comps,
			csrapprover.New(csrapprover.Config{Client: client, Nodes: s.ownNodes, Log: s.log.With("component", "csr-approver")}),
			ctrd,
			ag,
			kubelet.New(kubelet.Config{
				NodeName: c.NodeName, NodeIP: c.NodeIP, Port: c.KubeletPort,
				RootDir: p.Kubelet, ConfigFile: p.KubeletConfig, Kubeconfig: pki.KubeletKubeconfig,
				ClientCA:    pki.ClientCACert, // serving cert: requested from the cluster CA, approved by csr-approver
				CRIEndpoint: ctrd.Endpoint(), ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
				ResolvConf:       dns.PodResolvConf(c.ResolvConf, systemdResolvConf),
				Client:           client,
				CPUManagerPolicy: c.CPUManagerPolicy, ReservedCPUs: c.ReservedCPUs,
				SystemReserved: c.SystemReserved, KubeReserved: c.KubeReserved,
				CgroupRoot:           c.KubeletCgroupRoot,
				ImageGCHighThreshold: c.ImageGCHighThreshold, ImageGCLowThreshold: c.ImageGCLowThreshold, ImageGCMinAge: c.ImageGCMinAge,
				EvictionHard: c.TestEvictionHard,
				Log:          s.log.With("component", "kubelet"),
			}),
			network.New(network.Config{
				NodeName: c.NodeName, Client: client, ConfDir: p.CNIConf, IPAMDir: p.CNIIPAM,
				ClusterCIDR: c.ClusterCIDR, CleanupOnStop: c.Proxy.CleanupOnStop,
				Log: s.log.With("component", "network"),
			}),
			network.NewRoutes(network.RoutesConfig{
				NodeName: c.NodeName, NodeIP: c.NodeIP, Client: client,
				Backend: network.Backend(c.PodNetwork.Backend), VXLANPort: c.PodNetwork.VXLANPort, VXLANVNI: c.PodNetwork.VXLANVNI,
				CleanupOnStop: c.Proxy.CleanupOnStop,
				Log:           s.log.With("component", "pod-routes"),
			}),
		)
	}
	comps = append(comps, s.backupComponent(pki, et.ClientURL()))
	comps = append(comps, s.certComponent())
	if c.MetricsAddress != "none" && c.MetricsAddress != "" {
		comps = append(comps, metrics.New(metrics.Config{
			Address:  c.MetricsAddress,
			CertFile: pki.APIServerCert, KeyFile: pki.APIServerKey, ClientCAFile: pki.ClientCACert,
			Gatherer: legacyregistry.DefaultGatherer, Log: s.log.With("component", "metrics"),
		}))
	}
	s.sup = &component.Supervisor{Components: comps, Log: s.log}
	return nil
}

// ownNodes are the nodes whose kubelet serving certificates kubox
// approves: this box.
func (s *Server) ownNodes() []csrapprover.Node {
	return []csrapprover.Node{{Name: s.cfg.NodeName, IPs: []net.IP{s.cfg.NodeIP}}}
}

func adminClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "kubox"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("client from %s: %w", kubeconfig, err)
	}
	return client, nil
}

// systemdResolvConf lists systemd-resolved's real upstreams; its stub at
// 127.0.0.53 in /etc/resolv.conf is unreachable from a pod.
const systemdResolvConf = "/run/systemd/resolve/resolv.conf"

// dnsComponent serves cluster DNS on the node address, reading the API as
// admin (the kubernetes plugin lists Services, EndpointSlices, Namespaces).
func (s *Server) dnsComponent(kubeconfig string) (*dns.DNS, error) {
	c := s.cfg
	client, err := adminClient(kubeconfig)
	if err != nil {
		return nil, err
	}
	return dns.New(dns.Config{
		NodeName: c.NodeName, NodeIP: c.NodeIP, Port: c.DNSPort,
		ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
		Kubeconfig: kubeconfig, Client: client,
		ResolvConf: c.ResolvConf, OverrideFile: c.DNSConfigFile, CorefilePath: s.paths.Corefile,
		ReloadInterval: c.DNSReloadInterval,
		Log:            s.log.With("component", "dns"),
	}), nil
}
