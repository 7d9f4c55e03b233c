// Package kubelet runs the upstream kubelet as a child process of kubox
// (`kubox kubelet`, the same binary), configured through a
// KubeletConfiguration file that kubox writes (so operators can read what
// the kubelet runs with) and started only once the CRI socket answers.
//
// A child, not a goroutine: the kubelet calls os.Exit and klog.Fatal on
// its own failures, and shares package-level state (the feature gate, the
// CSI plugin's node info manager) with the controller manager and the
// apiserver. In its own process it can neither end kubox unannounced nor
// see their state.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/childproc"
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
	// OOMScoreAdj is the OOM score the kubelet gives itself; nil keeps
	// its default, -999. Lowering a score needs CAP_SYS_RESOURCE: without
	// it the kubelet's write fails, and it sleeps 100 ms after each of
	// its two tries, so kubox passes the score the child inherits.
	OOMScoreAdj *int32
	// PidFile records the child's pid, so a kubelet left by a killed kubox
	// is stopped at the next start.
	PidFile string
	Log     *slog.Logger // nil: slog.Default()
}

// Kubelet is the kubelet child process.
type Kubelet struct {
	cfg      Config
	cmd      *exec.Cmd
	exited   chan struct{}
	failed   chan error
	out      *output
	stopping atomic.Bool
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
	return &Kubelet{cfg: cfg, failed: make(chan error, 1)}
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
	if k.cfg.OOMScoreAdj != nil {
		c.OOMScoreAdj = k.cfg.OOMScoreAdj
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
	return k.args().Check(ctx)
}

func (k *Kubelet) args() Args {
	return Args{ConfigFile: k.cfg.ConfigFile, Kubeconfig: k.cfg.Kubeconfig, NodeName: k.cfg.NodeName, NodeIP: k.cfg.NodeIP.String(), RootDir: k.cfg.RootDir}
}

// Start runs the kubelet as a child process, `kubox kubelet` (see Run),
// after stopping one a killed kubox may have left.
func (k *Kubelet) Start(ctx context.Context) error {
	a := k.args()
	if pid, err := childproc.StopLeftover(k.cfg.PidFile, a.marker(), 10*time.Second); err != nil {
		return err
	} else if pid != 0 {
		k.log().Warn("stopped a kubelet left by a previous run", "pid", pid)
	}
	cmd := exec.Command(k.executable(), a.argv()...)
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("kubelet output pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	exited, err := childproc.Start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("start kubelet: %w", err)
	}
	k.cmd, k.exited, k.out = cmd, make(chan struct{}), newOutput()
	go k.out.copy(r, os.Stderr)
	go func() {
		err := <-exited
		// The last lines say why; grandchildren holding the pipe open
		// must not delay the report for long.
		select {
		case <-k.out.done:
		case <-time.After(2 * time.Second):
		}
		r.Close()
		close(k.exited)
		if !k.stopping.Load() {
			k.failed <- fmt.Errorf("kubelet exited (%s): %s", childproc.ExitStatus(err), k.out.cause())
		}
	}()
	if err := childproc.WritePid(k.cfg.PidFile, cmd.Process.Pid); err != nil {
		k.log().Warn("a kubelet left by a killed kubox would not be found", "err", err)
	}
	return nil
}

// executable is the binary the child runs: kubox's own file, so ps and top
// name it kubox, unless an upgrade replaced that file since kubox started;
// then /proc/self/exe, still this very binary.
func (k *Kubelet) executable() string {
	const self = "/proc/self/exe"
	path, err := os.Executable()
	if err != nil {
		return self
	}
	a, errA := os.Stat(path)
	b, errB := os.Stat(self)
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		return self
	}
	return path
}

// Failed reports a kubelet child that exited on its own.
func (k *Kubelet) Failed() <-chan error { return k.failed }

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

// Stop sends the kubelet SIGTERM (it returns from its Run, and its
// process, with every goroutine, ends), and SIGKILL if it has not exited
// when ctx ends.
func (k *Kubelet) Stop(ctx context.Context) error {
	if k.cmd == nil {
		return nil
	}
	k.stopping.Store(true)
	defer os.Remove(k.cfg.PidFile)
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
		return nil
	case <-ctx.Done():
		_ = k.cmd.Process.Kill()
		<-k.exited
		return errors.New("kubelet did not exit on SIGTERM; killed")
	}
}

func (k *Kubelet) log() *slog.Logger {
	if k.cfg.Log != nil {
		return k.cfg.Log
	}
	return slog.Default()
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
