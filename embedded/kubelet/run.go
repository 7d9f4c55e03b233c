package kubelet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	"k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

// Args are what the `kubox kubelet` child gets on its command line: paths
// and names only. Everything else is in the KubeletConfiguration file, and
// no secret ever goes into a child's argv (ps shows it to every user).
type Args struct {
	ConfigFile string // the KubeletConfiguration kubox wrote
	Kubeconfig string
	NodeName   string
	NodeIP     string
	RootDir    string
}

// AddFlags binds a's fields to the verb's flags.
func (a *Args) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.ConfigFile, "config", "", "KubeletConfiguration file written by kubox server")
	fs.StringVar(&a.Kubeconfig, "kubeconfig", "", "the kubelet's kubeconfig")
	fs.StringVar(&a.NodeName, "node-name", "", "this node's name")
	fs.StringVar(&a.NodeIP, "node-ip", "", "this node's IP")
	fs.StringVar(&a.RootDir, "root-dir", "", "the kubelet's root dir")
}

// argv is the child's command line after the binary: the verb, then the
// flags AddFlags reads.
func (a Args) argv() []string {
	return []string{"kubelet", "--config", a.ConfigFile, "--kubeconfig", a.Kubeconfig,
		"--node-name", a.NodeName, "--node-ip", a.NodeIP, "--root-dir", a.RootDir}
}

// marker is the part of the child's command line that identifies the
// kubelet of this data dir (see childproc.StopLeftover).
func (a Args) marker() string {
	return "kubelet\x00--config\x00" + a.ConfigFile + "\x00"
}

// server loads and validates the configuration file and the flags the way
// the kubelet's own command does, with gate as the feature gate the
// configuration's featureGates are applied to.
func (a Args) server(ctx context.Context, gate featuregate.MutableFeatureGate) (*options.KubeletServer, error) {
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, a.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("load kubelet configuration: %w", err)
	}
	kc, err := loader.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load kubelet configuration %s: %w", a.ConfigFile, err)
	}
	if err := gate.SetFromMap(kc.FeatureGates); err != nil {
		return nil, fmt.Errorf("kubelet feature gates: %w", err)
	}
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, gate); err != nil {
		return nil, fmt.Errorf("kubelet configuration %s: %w", a.ConfigFile, err)
	}
	fl := options.NewKubeletFlags()
	fl.KubeConfig = a.Kubeconfig
	fl.HostnameOverride = a.NodeName
	fl.NodeIP = a.NodeIP
	fl.RootDirectory = a.RootDir
	fl.CertDirectory = filepath.Join(a.RootDir, "pki")
	fl.KubeletConfigFile = a.ConfigFile
	if err := options.ValidateKubeletFlags(fl); err != nil {
		return nil, fmt.Errorf("kubelet flags: %w", err)
	}
	return &options.KubeletServer{KubeletFlags: *fl, KubeletConfiguration: *kc}, nil
}

// Check validates the configuration without running anything, against a
// copy of this process's feature gate: kubox server calls it in Init, so a
// bad configuration stops kubox before anything starts, and the
// kubelet's feature gates never touch the apiserver's.
func (a Args) Check(ctx context.Context) error {
	_, err := a.server(ctx, utilfeature.DefaultMutableFeatureGate.DeepCopyAndReset())
	return err
}

// Run is the `kubox kubelet` child: it runs the upstream kubelet until ctx
// ends (nil) or the kubelet fails (its error). It is the only upstream
// component in its process, so the kubelet's package-level state (the
// feature gate, the CSI plugin's node info manager, the legacy metrics
// registry) is its own, and its os.Exit calls end only this process.
func Run(ctx context.Context, a Args) error {
	s, err := a.server(ctx, utilfeature.DefaultMutableFeatureGate)
	if err != nil {
		return err
	}
	deps, err := app.UnsecuredDependencies(ctx, s, utilfeature.DefaultFeatureGate)
	if err != nil {
		return fmt.Errorf("kubelet dependencies: %w", err)
	}
	if err := app.Run(ctx, s, deps, utilfeature.DefaultFeatureGate); err != nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("stopped on its own")
	}
	return nil
}
