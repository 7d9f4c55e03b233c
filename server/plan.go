package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/kubox/kubox/airgap"
	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/backup/s3"
	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/embedded/apiserver"
	"github.com/kubox/kubox/embedded/assets"
	"github.com/kubox/kubox/embedded/containerd"
	"github.com/kubox/kubox/embedded/controllers"
	"github.com/kubox/kubox/embedded/dns"
	"github.com/kubox/kubox/embedded/etcd"
	"github.com/kubox/kubox/embedded/kubelet"
	"github.com/kubox/kubox/embedded/scheduler"
	"github.com/kubox/kubox/internal/fatal"
	"github.com/kubox/kubox/internal/fsutil"
	"github.com/kubox/kubox/internal/leader"
	"github.com/kubox/kubox/proxy"
	"github.com/kubox/kubox/proxy/mode"
	"github.com/kubox/kubox/services/csrapprover"
	"github.com/kubox/kubox/services/diskguard"
	"github.com/kubox/kubox/services/etcdproxy"
	"github.com/kubox/kubox/services/localpath"
	"github.com/kubox/kubox/services/manifests"
	"github.com/kubox/kubox/services/metrics"
	"github.com/kubox/kubox/services/netpol"
	"github.com/kubox/kubox/services/network"
	"github.com/kubox/kubox/services/resourcemetrics"
)

// A start has two steps. prepare does everything that touches this host or
// another box before any component runs (a join's etcd member add, the PKI,
// the etcd proxy's listener, API clients) and hands back an undo for what
// must not outlive a failed start. plan then builds the components, with
// what each needs, from what prepare produced and touches nothing, so a
// unit test can pin them.

// prepared is what prepare produced and plan reads.
type prepared struct {
	cfg   Config
	paths Paths
	log   *slog.Logger

	pki        *bootstrap.PKI
	signerCert string // the cluster CA's signer certificate (see bootstrap.PKI.SignerCertFile)
	// join is a join under way (nil unless this start joins).
	join *joinResult
	// etcdProxy is set on a box that joined: its apiserver reaches etcd
	// through the proxy (see services/etcdproxy), which serves here.
	etcdProxy    net.Listener
	etcdProxyTLS *tls.Config
	// client reads and writes the API as admin; dnsClient is the DNS
	// server's own (it lists Services, EndpointSlices, Namespaces).
	client, dnsClient kubernetes.Interface
	airgapPolicy      airgap.SignaturePolicy
	capSysResource    bool
	// leaseIdentity is what the controller manager and the scheduler
	// campaign with; kept in the data dir (see leader.StableIdentity).
	leaseIdentity string
	// fatals, when set, receives etcd's fatal exits (see Server.CatchFatal).
	fatals *fatal.Catcher
}

// kubeletOOMScoreAdj is the OOM score the kubelet sets itself: its default
// (nil) where this process may lower scores, else the score it inherits
// from kubox, the only one it can write.
func (in *prepared) kubeletOOMScoreAdj() *int32 {
	if in.capSysResource {
		return nil
	}
	v, err := OwnOOMScoreAdj()
	if err != nil {
		in.log.Warn("kubelet keeps its default OOM score", "err", err)
		return nil
	}
	return &v
}

// step is one component of the plan and the components it needs ready
// before it starts. The supervisor starts each step as soon as its needs
// are ready, so needs are the whole of the start's order (the plan's order
// is the stop's, in reverse): a component that relies on another being up
// must name it.
type step struct {
	component.Component
	needs []string
}

// prepare does the start's side effects in order. When it fails, what it
// did is undone before it returns; when a later start step fails, the
// caller runs undo (with the failure) once every component has stopped.
func (s *Server) prepare(ctx context.Context) (*prepared, func(cause error) error, error) {
	in := &prepared{cfg: s.cfg, paths: s.paths, log: s.log, capSysResource: HasCapSysResource(), fatals: s.fatals}
	var undos []func()
	undo := func(cause error) error {
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i]()
		}
		if in.join != nil {
			// Only now: etcd no longer uses the dir that is moved aside.
			cause = s.undoJoin(in.join, cause)
		}
		return cause
	}
	if err := s.prepareSteps(ctx, in, &undos); err != nil {
		return nil, nil, undo(err)
	}
	return in, undo, nil
}

// prepareSteps fills in, recording in undos what a failed start must undo.
func (s *Server) prepareSteps(ctx context.Context, in *prepared, undos *[]func()) error {
	c, p := s.cfg, s.paths
	var err error
	if c.JoinURL != "" {
		if in.join, err = s.prepareJoin(ctx); err != nil {
			return err
		}
	}
	if in.pki, err = bootstrap.Ensure(ctx, c.PKIConfig()); err != nil {
		return fmt.Errorf("bootstrap PKI: %w", err)
	}
	if in.signerCert, err = in.pki.SignerCertFile(); err != nil {
		return err
	}
	if err := in.pki.WriteServingChain(); err != nil {
		return err
	}
	s.adminKubeconfig = in.pki.AdminKubeconfig
	if in.leaseIdentity, err = leader.StableIdentity(p.LeaseIdentity, c.NodeName); err != nil {
		return err
	}
	// join.json too: a joined box may be restarted without --join.
	if joined, _ := fsutil.Exists(p.JoinState); c.JoinURL != "" || joined {
		if in.etcdProxyTLS, err = (&transport.TLSInfo{CertFile: in.pki.EtcdClientCert, KeyFile: in.pki.EtcdClientKey, TrustedCAFile: in.pki.EtcdServerCACert}).ClientConfig(); err != nil {
			return fmt.Errorf("etcd client TLS for the etcd proxy: %w", err)
		}
		if in.etcdProxy, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("etcd proxy: listen on 127.0.0.1: %w", err)
		}
		ln := in.etcdProxy
		*undos = append(*undos, func() { ln.Close() })
	}
	if in.client, err = adminClient(in.pki.AdminKubeconfig); err != nil {
		return err
	}
	if !c.DisableDNS {
		if in.dnsClient, err = adminClient(in.pki.AdminKubeconfig); err != nil {
			return err
		}
	}
	if !c.DisableAgent {
		in.airgapPolicy.Require = c.AirgapRequireSignature
		in.airgapPolicy.AllowUnsigned = c.AirgapAllowUnsigned
		if c.AirgapPublicKeyFile != "" {
			if in.airgapPolicy.PublicKey, err = airgap.LoadPublicKey(c.AirgapPublicKeyFile); err != nil {
				return err
			}
		}
	}
	if c.Proxy.Disable {
		s.log.Info("service proxy disabled (--disable-proxy)")
	}
	if c.DisableNetworkPolicy && !c.DisableAgent {
		// A run with policies that did not clean up left them in kubox's table.
		if err := netpol.Remove(ctx); err != nil {
			s.log.Warn("network policies disabled, but could not remove earlier rules", "err", err)
		}
	}
	return nil
}

// plan returns this node's components in start order. It only builds
// them: nothing runs and nothing on the host changes.
func plan(in *prepared) ([]step, error) {
	c, p, pki := in.cfg, in.paths, in.pki
	logFor := func(name string) *slog.Logger { return in.log.With("component", name) }
	var steps []step
	add := func(comp component.Component, needs ...string) {
		steps = append(steps, step{Component: comp, needs: needs})
	}

	// First, so it watches the disk while the rest starts, and stops last.
	add(diskguard.New(diskguard.Config{Dir: c.DataDir, Log: logFor("disk")}))

	etcdCfg := etcd.Config{
		Name: c.NodeName, DataDir: p.Etcd, NodeIP: c.NodeIP,
		ClientPort: c.EtcdClientPort, PeerPort: c.EtcdPeerPort,
		ServerCACert: pki.EtcdServerCACert, ServerCert: pki.EtcdServerCert, ServerKey: pki.EtcdServerKey,
		PeerCACert: pki.EtcdPeerCACert, PeerCert: pki.EtcdPeerCert, PeerKey: pki.EtcdPeerKey,
		ClientCert: pki.EtcdClientCert, ClientKey: pki.EtcdClientKey,
		QuotaBytes: c.EtcdQuotaBytes,
	}
	if in.join != nil {
		etcdCfg.InitialCluster, etcdCfg.ClusterState = in.join.initialCluster, "existing"
	}
	if in.fatals != nil {
		etcdCfg.FatalHook = in.fatals.ZapHook("etcd")
	}
	et := etcd.New(etcdCfg)
	add(et)
	// Before anything writes: it clears a NOSPACE alarm and defragments
	// while no client is connected (see embedded/etcd/space.go).
	add(et.Space(etcd.SpaceConfig{Log: logFor("etcd")}), "etcd")
	if in.join != nil && in.join.promote {
		add(newPromoter(in.join, in.log), "etcd")
	}

	// The apiserver of a box that never joined talks to its own member,
	// always a voter. A joined box's member may be a learner now and a
	// voter later, and any other member may go: its apiserver goes through
	// a proxy that follows the membership.
	etcdURL, etcdNeed := et.ClientURL(), "etcd"
	if in.etcdProxy != nil {
		members := func(ctx context.Context) ([]etcdproxy.Member, error) {
			ms, err := et.Members(ctx)
			out := make([]etcdproxy.Member, 0, len(ms))
			for _, m := range ms {
				out = append(out, etcdproxy.Member{Name: m.Name, Learner: m.Learner, ClientURLs: m.ClientURLs})
			}
			return out, err
		}
		px, err := etcdproxy.New(etcdproxy.Config{
			Name: c.NodeName, LocalURL: et.ClientURL(), Members: members, TLS: in.etcdProxyTLS,
			Listener: in.etcdProxy, Log: logFor("etcd-proxy"),
		})
		if err != nil {
			return nil, err
		}
		// After a promotion, as before the parallel start: the apiserver
		// comes up on a member that already votes.
		pxNeeds := []string{"etcd"}
		if in.join != nil && in.join.promote {
			pxNeeds = append(pxNeeds, "etcd-promote")
		}
		add(px, pxNeeds...)
		etcdURL, etcdNeed = px.URL(), px.Name()
	}
	var metricsAPI *resourcemetrics.Server
	var installAPIs func(*genericapiserver.GenericAPIServer) error
	if !c.DisableMetricsAPI {
		metricsAPI = resourcemetrics.New(resourcemetrics.Config{
			Kubeconfig: pki.AdminKubeconfig,
			KubeletCA:  pki.CACert, KubeletCert: pki.APIServerKubeletClientCert, KubeletKey: pki.APIServerKubeletClientKey,
			Log: logFor("metrics-api"),
		})
		installAPIs = metricsAPI.Install
	}
	add(apiserver.New(apiserver.Config{
		NodeIP: c.NodeIP, Port: c.HTTPSPort, ServiceCIDR: c.ServiceCIDR.String(), ClusterDomain: c.ClusterDomain, EtcdURL: etcdURL,
		ClusterCA: pki.CACert, ClientCA: pki.ClientCACert, RequestCA: pki.RequestHeaderCACert,
		ProxyCert: pki.FrontProxyClientCert, ProxyKey: pki.FrontProxyClientKey,
		ServingCert: pki.ServingChainFile(), ServingKey: pki.APIServerKey,
		EtcdCA: pki.EtcdServerCACert, EtcdCert: pki.EtcdClientCert, EtcdKey: pki.EtcdClientKey,
		KubeletCert: pki.APIServerKubeletClientCert, KubeletKey: pki.APIServerKubeletClientKey,
		SAKey: pki.ServiceAccountKey, SAPub: pki.ServiceAccountPub, Encryption: pki.EncryptionConfig,
		AdminCert: pki.AdminCert, AdminKey: pki.AdminKey, Install: installAPIs, Log: logFor("apiserver"),
	}), etcdNeed, "etcd-space")
	add(newPublisher(in.client, c.clusterSettings(), p.JoinState, in.log), "apiserver")
	var cm component.Component = controllers.New(controllers.Config{
		Kubeconfig: pki.ControllerManagerKubeconfig, ClusterCIDR: c.ClusterCIDR.String(), ServiceCIDR: c.ServiceCIDR.String(),
		NodeCIDRMaskV4: NodeCIDRMaskSize, NodeName: c.NodeName, LeaseIdentity: in.leaseIdentity, Log: in.log,
		ClusterSigningCert: in.signerCert, ClusterSigningKey: pki.CAKey, RootCA: pki.CACert, SAKey: pki.ServiceAccountKey,
	})
	if c.Testing.ControllerManagerAfterNode {
		cm = &afterNode{Component: cm, client: in.client, node: c.NodeName, failed: make(chan error, 1)}
	}
	add(cm, "apiserver")
	add(scheduler.New(scheduler.Config{Kubeconfig: pki.SchedulerKubeconfig, NodeName: c.NodeName, LeaseIdentity: in.leaseIdentity, Log: in.log}), "apiserver")
	add(metricsAPIStep(metricsAPI, pki.AdminKubeconfig, logFor("metrics-api")), "apiserver")
	if !c.DisableDNS {
		add(dns.New(dns.Config{
			NodeName: c.NodeName, NodeIP: c.NodeIP, Port: c.DNSPort,
			ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain, ClusterCIDR: c.ClusterCIDR, AllowCIDRs: c.DNSAllowCIDRs,
			Kubeconfig: pki.AdminKubeconfig, Client: in.dnsClient,
			ResolvConf: c.ResolvConf, OverrideFile: c.DNSConfigFile, CorefilePath: p.Corefile,
			ReloadInterval: c.Testing.DNSReloadInterval,
			Log:            logFor("dns"),
		}), "apiserver")
	}
	if !c.DisableAgent {
		agentSteps(in, add)
	}
	// On every box, agent or not: each applies the files of its own dir.
	add(manifests.New(manifests.Config{
		Dir: c.ManifestsDir, AppsDir: airgap.AppsDir(c.DataDir),
		NodeName: c.NodeName, Kubeconfig: pki.AdminKubeconfig, Log: logFor("manifests"),
	}), "apiserver")
	add(backupScheduler(in, et.ClientURL()), "apiserver")
	// After etcd, as everything but the disk guard: a box whose etcd
	// refuses to start (a removed or stale member) starts nothing else.
	add(newCertRenewer(c, logFor("certs")), "etcd")
	if c.MetricsAddress != "none" && c.MetricsAddress != "" {
		add(metrics.New(metrics.Config{
			Address:  c.MetricsAddress,
			CertFile: pki.APIServerCert, KeyFile: pki.APIServerKey, ClientCAFile: pki.ClientCACert,
			Gatherer: legacyregistry.DefaultGatherer, Log: logFor("metrics"),
			Pprof: c.Testing.Pprof,
		}), "etcd")
	}
	return steps, nil
}

// agentSteps adds what runs pods: the service proxy, the kubelet's CSR
// approver, containerd, the air-gap importer, the kubelet and the pod
// network.
func agentSteps(in *prepared, add func(component.Component, ...string)) {
	c, p, pki := in.cfg, in.paths, in.pki
	logFor := func(name string) *slog.Logger { return in.log.With("component", name) }
	// The proxy comes before pods get a network (see the pod network's
	// needs below), so Services work when pods start.
	if !c.Proxy.Disable {
		px := proxy.New(proxy.Config{
			Mode: mode.Mode(c.Proxy.Mode), Scheduler: c.Proxy.IPVSScheduler,
			NodeName: c.NodeName, NodeIP: c.NodeIP, ClusterCIDR: c.ClusterCIDR, Client: in.client,
			SyncPeriod: c.Proxy.SyncPeriod, MinSyncPeriod: c.Proxy.MinSyncPeriod,
			MasqueradeAll: c.Proxy.MasqueradeAll, NodePortAddresses: c.Proxy.NodePortAddresses,
			StrictARP: c.Proxy.IPVSStrictARP, CleanupOnStop: c.Proxy.CleanupOnStop,
			StateFile: p.ProxyModeState,
			Log:       logFor("proxy"),
		})
		// Its setup needs no API: it runs while the apiserver starts.
		// After etcd, as the runtime binaries (below).
		add(px.Setup(), "etcd")
		add(px, "apiserver", "proxy-setup")
	}
	// Approves this kubelet's serving certificate requests.
	add(csrapprover.New(csrapprover.Config{
		Client: in.client, Log: logFor("csr-approver"),
		Nodes: func() []csrapprover.Node { return []csrapprover.Node{{Name: c.NodeName, IPs: []net.IP{c.NodeIP}}} },
	}), "apiserver")
	// A one-shot, not a prepare step: on a fresh data dir writing the
	// binaries takes about half a second, which now overlaps the
	// apiserver's start instead of coming before etcd's. After etcd, so a
	// box whose etcd refuses to start starts no containerd either.
	add(component.OneShot("runtime-binaries", func(context.Context) error {
		if err := assets.Install(p.Bin); err != nil {
			return fmt.Errorf("install runtime binaries into %s: %w", p.Bin, err)
		}
		return nil
	}), "etcd")
	ctrd := containerd.New(containerd.Config{
		Binary: filepath.Join(p.Bin, "containerd"),
		Root:   p.ContainerdRoot, State: p.ContainerdState, Socket: p.ContainerdSock,
		ConfigFile: p.ContainerdConfig, LogFile: p.ContainerdLog,
		BinDir: p.Bin, ShimPath: filepath.Join(p.Bin, "containerd-shim-runc-v2"), RuncPath: filepath.Join(p.Bin, "runc"),
		CNIBinDir: p.CNIBin, CNIConfDir: p.CNIConf,
		SandboxImage:        assets.PauseImage,
		ImportImages:        []func() (io.ReadCloser, error){assets.PauseImageArchive},
		RestrictOOMScoreAdj: !in.capSysResource,
		StopPodsOnExit:      c.StopPodsOnExit,
		Log:                 logFor("containerd"),
	})
	add(ctrd, "runtime-binaries")
	// Imports in the background once the node is Ready: no bundle holds
	// up the kubelet or counts against the start timeout.
	add(airgap.NewWatcher(airgap.WatcherConfig{
		Dir:           c.AirgapImagesDir,
		Record:        airgap.Record{Path: airgap.DefaultRecordPath(c.DataDir)},
		AppsDir:       airgap.AppsDir(c.DataDir),
		Address:       p.ContainerdSock,
		Signature:     in.airgapPolicy,
		NodeName:      c.NodeName,
		Client:        in.client,
		TestWriteRate: c.Testing.AirgapWriteRate,
		Log:           logFor("airgap"),
	}), "containerd")
	// No pod gets a network before the service proxy and the network
	// policies are in place. On a fresh box the pod network (below) writes
	// the CNI config only once they are ready; without it the node stays
	// NotReady and the kubelet starts no pod sandbox, so the kubelet's own
	// start (a process, cgroups, registration) overlaps theirs. A restart
	// finds the config of the run before: there the kubelet waits for them.
	// (Removing that config instead would post a NotReady the kubelet's
	// quick status loop does not see the end of: Ready again only at its
	// next 10 s status update.)
	var beforePods []string
	if !c.Proxy.Disable {
		beforePods = append(beforePods, "proxy")
	}
	if !c.DisableNetworkPolicy {
		add(netpol.New(netpol.Config{
			NodeName: c.NodeName, Client: in.client, CleanupOnStop: c.Proxy.CleanupOnStop,
			Log: logFor("network-policy"),
		}), "apiserver")
		beforePods = append(beforePods, "network-policy")
	}
	podNetwork := network.New(network.Config{
		NodeName: c.NodeName, Client: in.client, ConfDir: p.CNIConf, IPAMDir: p.CNIIPAM,
		ClusterCIDR: c.ClusterCIDR, CleanupOnStop: c.Proxy.CleanupOnStop,
		Log: logFor("network"),
	})
	kubeletNeeds := []string{"apiserver", "containerd", "csr-approver"}
	if _, err := os.Stat(podNetwork.ConfFile()); err == nil {
		kubeletNeeds = append(kubeletNeeds, beforePods...)
	}
	add(kubelet.New(kubelet.Config{
		NodeName: c.NodeName, NodeIP: c.NodeIP, Port: c.KubeletPort,
		RootDir: p.Kubelet, ConfigFile: p.KubeletConfig, Kubeconfig: pki.KubeletKubeconfig,
		ClientCA:    pki.ClientCACert, // serving cert: requested from the cluster CA, approved by csr-approver
		CRIEndpoint: ctrd.Endpoint(), ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
		ResolvConf:       dns.PodResolvConf(c.ResolvConf, systemdResolvConf),
		Client:           in.client,
		CPUManagerPolicy: c.CPUManagerPolicy, ReservedCPUs: c.ReservedCPUs,
		SystemReserved: c.SystemReserved, KubeReserved: c.KubeReserved,
		CgroupRoot:           c.Testing.KubeletCgroupRoot,
		ImageGCHighThreshold: c.ImageGCHighThreshold, ImageGCLowThreshold: c.ImageGCLowThreshold, ImageGCMinAge: c.ImageGCMinAge,
		EvictionHard: c.Testing.EvictionHard,
		OOMScoreAdj:  in.kubeletOOMScoreAdj(),
		PidFile:      p.KubeletPid,
		Log:          logFor("kubelet"),
	}), kubeletNeeds...)
	// Writes the CNI config once the controller manager gave this node
	// its pod range. It waits for the range itself, not for the kubelet
	// to be ready: that Ready also waits for the kubelet's serving
	// certificate, which the node's Ready condition does not need.
	add(podNetwork, append([]string{"controller-manager"}, beforePods...)...)
	add(network.NewRoutes(network.RoutesConfig{
		NodeName: c.NodeName, NodeIP: c.NodeIP, Client: in.client,
		Backend: network.Backend(c.PodNetwork.Backend), VXLANPort: c.PodNetwork.VXLANPort, VXLANVNI: c.PodNetwork.VXLANVNI,
		CleanupOnStop: c.Proxy.CleanupOnStop,
		Log:           logFor("pod-routes"),
	}), "apiserver")
	// Per box: provisions the local-path volumes the scheduler placed on
	// this node, in its storage dir.
	add(localpath.New(localpath.Config{
		NodeName: c.NodeName, Dir: c.StorageDir, Client: in.client, Log: logFor("local-path"),
	}), "apiserver")
}

// backupScheduler is the last component but the renewer and metrics: it
// finishes a `kubox restore` once the apiserver is up (removes the old
// box's Node object) and, when SnapshotSchedule is set, takes scheduled
// snapshots with retention.
func backupScheduler(in *prepared, etcdURL string) component.Component {
	c, pki := in.cfg, in.pki
	var remote func() (backup.Remote, error)
	if c.SnapshotS3.Enabled() {
		remote = func() (backup.Remote, error) { return s3.New(c.SnapshotS3, c.NodeName) }
	}
	return backup.NewScheduler(backup.SchedulerConfig{
		Schedule: c.SnapshotSchedule, Retention: c.SnapshotRetention, Dir: c.snapshotDir(), KeyFile: c.SnapshotKeyFile,
		OpenRemote: remote, KeepLocal: c.SnapshotS3KeepLocal,
		Etcd:   backup.EtcdEndpoint{URL: etcdURL, CACert: pki.EtcdServerCACert, Cert: pki.EtcdClientCert, Key: pki.EtcdClientKey},
		PKIDir: pki.Dir, NodeName: c.NodeName, KuboxVersion: c.KuboxVersion,
		DataDir: c.DataDir, Kubeconfig: pki.AdminKubeconfig,
		Log: in.log.With("component", "backup"),
	})
}

// metricsAPIStep scrapes the kubelets and announces metrics.k8s.io, which
// the apiserver serves (see services/resourcemetrics); with the API off
// (nil), it removes kubox's APIService, so a box that no longer serves
// the group does not announce it. Best effort: a failure is logged.
func metricsAPIStep(m *resourcemetrics.Server, kubeconfig string, log *slog.Logger) component.Component {
	if m != nil {
		return m
	}
	return component.OneShot("metrics-api-off", func(ctx context.Context) error {
		if err := resourcemetrics.RemoveAPIService(ctx, kubeconfig); err != nil {
			log.Warn("metrics API is off but its APIService could not be removed", "err", err)
		}
		return nil
	})
}
