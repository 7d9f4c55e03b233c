// Package kubelet runs the upstream kubelet inside kubox, configured through
// a KubeletConfiguration file that kubox writes (so operators can read what
// the kubelet runs with) and started only once the CRI socket answers.
package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
	"sigs.k8s.io/yaml"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/fsutil"
)

// Config holds what kubox decides for the kubelet.
type Config struct {
	NodeName   string
	NodeIP     net.IP
	Port       int    // kubelet API (TLS); default 10250
	RootDir    string // the kubelet's --root-dir
	ConfigFile string // where kubox writes the KubeletConfiguration
	Kubeconfig string
	ClientCA   string // verifies clients of the kubelet API (the apiserver)
	// ServingCert and ServingKey are the kubelet's serving certificate
	// files. Empty: the kubelet requests its serving certificate from the
	// cluster CA with a CertificateSigningRequest (serverTLSBootstrap),
	// keeps it in <RootDir>/pki and renews it itself; Ready then waits for it.
	ServingCert   string
	ServingKey    string
	CRIEndpoint   string // unix:///run/kubox/containerd/containerd.sock
	ClusterDNS    net.IP
	ClusterDomain string
	// ResolvConf is the resolv.conf pods with dnsPolicy Default get, and
	// whose search domains every pod gets (default /etc/resolv.conf).
	ResolvConf string
	// Client reads the Node for readiness.
	Client kubernetes.Interface
	// CPU manager policy ("none" or "static", see cpumanager.go), the
	// cpuset reserved for the system, and reserved resources.
	CPUManagerPolicy string
	ReservedCPUs     string
	SystemReserved   map[string]string
	KubeReserved     map[string]string
	// CgroupRoot, if set, puts the kubelet's pod cgroups under this cgroup
	// instead of the root (several kubox boxes on one test machine must not
	// share "kubepods": each kubelet deletes pod cgroups it does not know).
	CgroupRoot string
	// Image garbage collection: disk usage thresholds in percent (0 and 0:
	// the kubelet's defaults) and the minimum age of an unused image.
	ImageGCHighThreshold, ImageGCLowThreshold int
	ImageGCMinAge                             time.Duration
	// EvictionHard replaces the kubelet's hard eviction thresholds
	// (signal -> value, e.g. "imagefs.available": "15%"); nil keeps its defaults.
	EvictionHard map[string]string
	Log          *slog.Logger // nil: slog.Default()
}

// Kubelet is the embedded kubelet.
type Kubelet struct {
	cfg    Config
	server *options.KubeletServer
	run    component.Goroutine
}

var (
	_ component.Component   = (*Kubelet)(nil)
	_ component.Initializer = (*Kubelet)(nil)
	_ component.Readier     = (*Kubelet)(nil)
	_ component.Failer      = (*Kubelet)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Kubelet {
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	return &Kubelet{cfg: cfg}
}

func (k *Kubelet) Name() string { return "kubelet" }

// Configuration is the KubeletConfiguration kubox runs the kubelet with.
func (k *Kubelet) Configuration() *kubeletv1beta1.KubeletConfiguration {
	f, t := false, true
	zero := int32(0)
	c := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: &f},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: &t},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: k.cfg.ClientCA},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		ReadOnlyPort:             0,
		Port:                     int32(k.cfg.Port),
		HealthzPort:              &zero, // plain-HTTP listener: kubox checks the node through the API instead
		CgroupDriver:             "cgroupfs",
		FailCgroupV1:             &f, // hybrid cgroup v1 hosts are common at the edge
		FailSwapOn:               &f,
		ContainerRuntimeEndpoint: k.cfg.CRIEndpoint,
		ClusterDomain:            k.cfg.ClusterDomain,
		TLSCertFile:              k.cfg.ServingCert,
		TLSPrivateKeyFile:        k.cfg.ServingKey,
		RotateCertificates:       false, // kubox issues and renews the kubelet's client certificate
		ServerTLSBootstrap:       k.cfg.ServingCert == "",
		StaticPodPath:            "",
	}
	if k.cfg.ClusterDNS != nil {
		c.ClusterDNS = []string{k.cfg.ClusterDNS.String()}
	}
	if k.cfg.CgroupRoot != "" {
		c.CgroupRoot = k.cfg.CgroupRoot
	}
	if k.cfg.ImageGCHighThreshold != 0 || k.cfg.ImageGCLowThreshold != 0 {
		hi, lo := int32(k.cfg.ImageGCHighThreshold), int32(k.cfg.ImageGCLowThreshold)
		c.ImageGCHighThresholdPercent, c.ImageGCLowThresholdPercent = &hi, &lo
		c.ImageMinimumGCAge = metav1.Duration{Duration: k.cfg.ImageGCMinAge}
	}
	if k.cfg.EvictionHard != nil {
		c.EvictionHard = k.cfg.EvictionHard
	}
	if k.cfg.ResolvConf != "" {
		c.ResolverConfig = &k.cfg.ResolvConf
	}
	k.cpuManager(c)
	return c
}

func (k *Kubelet) Init(ctx context.Context) error {
	if err := os.MkdirAll(k.cfg.RootDir, 0o700); err != nil {
		return fmt.Errorf("create kubelet root dir: %w", err)
	}
	if err := k.retireStaleCPUManagerState(); err != nil {
		return err
	}
	if err := ensureCgroupRoot(k.cfg.CgroupRoot); err != nil {
		return err
	}
	data, err := yaml.Marshal(k.Configuration())
	if err != nil {
		return fmt.Errorf("render kubelet configuration: %w", err)
	}
	if _, err := fsutil.WriteFileIfChanged(k.cfg.ConfigFile, data, 0o600); err != nil {
		return fmt.Errorf("write kubelet configuration: %w", err)
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, k.cfg.ConfigFile)
	if err != nil {
		return fmt.Errorf("load kubelet configuration: %w", err)
	}
	kc, err := loader.Load(ctx)
	if err != nil {
		return fmt.Errorf("load kubelet configuration %s: %w", k.cfg.ConfigFile, err)
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
		return fmt.Errorf("kubelet feature gates: %w", err)
	}
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return fmt.Errorf("kubelet configuration %s: %w", k.cfg.ConfigFile, err)
	}
	fl := options.NewKubeletFlags()
	fl.KubeConfig = k.cfg.Kubeconfig
	fl.HostnameOverride = k.cfg.NodeName
	fl.NodeIP = k.cfg.NodeIP.String()
	fl.RootDirectory = k.cfg.RootDir
	fl.CertDirectory = filepath.Join(k.cfg.RootDir, "pki")
	fl.KubeletConfigFile = k.cfg.ConfigFile
	if err := options.ValidateKubeletFlags(fl); err != nil {
		return fmt.Errorf("kubelet flags: %w", err)
	}
	k.server = &options.KubeletServer{KubeletFlags: *fl, KubeletConfiguration: *kc}
	return nil
}

func (k *Kubelet) Start(ctx context.Context) error {
	deps, err := app.UnsecuredDependencies(ctx, k.server, utilfeature.DefaultFeatureGate)
	if err != nil {
		return fmt.Errorf("kubelet dependencies: %w", err)
	}
	k.run.Go(ctx, "kubelet", func(ctx context.Context) error { return app.Run(ctx, k.server, deps, utilfeature.DefaultFeatureGate) })
	return nil
}

// Failed reports a kubelet that returned on its own.
func (k *Kubelet) Failed() <-chan error { return k.run.Failed() }

// ServingCertFile is where the kubelet keeps the serving certificate it
// got through a CertificateSigningRequest.
func (k *Kubelet) ServingCertFile() string {
	return filepath.Join(k.cfg.RootDir, "pki", "kubelet-server-current.pem")
}

// Ready waits for the kubelet to register its Node and, with a requested
// serving certificate, for that certificate: until then the kubelet
// cannot serve kubectl logs/exec.
func (k *Kubelet) Ready(ctx context.Context) error {
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := k.cfg.Client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not registered: %w", k.cfg.NodeName, err)
	}
	if k.cfg.ServingCert != "" {
		return nil
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		_, err := os.Stat(k.ServingCertFile())
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kubelet has no serving certificate (its CertificateSigningRequest was not approved and signed; see kubectl get csr): %w", err)
	}
	return nil
}

// Stop cancels the kubelet's context. The kubelet has no full in-process
// shutdown: some of its goroutines end only with the process, which follows.
func (k *Kubelet) Stop(ctx context.Context) error {
	if err := k.run.Stop(ctx); err != nil {
		return fmt.Errorf("kubelet did not stop in time: %w", err)
	}
	return nil
}

// NodeReady reports whether the node's Ready condition is true.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
