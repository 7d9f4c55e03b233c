package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubox/kubox/internal/fsutil"
)

// kubeconfigName is the cluster, user and context name in every kubeconfig
// kubox writes.
const kubeconfigName = "kubox"

// writeKubeconfigs (re)writes the component and admin kubeconfigs from the
// certs on disk. They are derived data: rewritten when a cert or the server
// URL changed, left alone (same mtime) otherwise.
func (p *PKI) writeKubeconfigs(ctx context.Context, cfg Config, cluster *authority) error {
	for _, k := range []struct {
		name, path, cert, key string
		embed                 bool
	}{
		// The admin kubeconfig is copied off the box: self-contained.
		{"admin", p.AdminKubeconfig, p.AdminCert, p.AdminKey, true},
		// Components read their client cert from the files, so client-go
		// reloads it when kubox renews it, without a restart.
		{"controller-manager", p.ControllerManagerKubeconfig, p.ControllerManagerCert, p.ControllerManagerKey, false},
		{"scheduler", p.SchedulerKubeconfig, p.SchedulerCert, p.SchedulerKey, false},
		{"kubelet", p.KubeletKubeconfig, p.KubeletClientCert, p.KubeletClientKey, false},
	} {
		data, err := buildKubeconfig(cfg.APIServerURL, cluster.certPEM, k.cert, k.key, k.embed)
		if err != nil {
			return fmt.Errorf("build %s kubeconfig: %w", k.name, err)
		}
		if err := syncFile(ctx, k.path, data); err != nil {
			return fmt.Errorf("write %s kubeconfig: %w", k.name, err)
		}
		if k.name == "admin" && cfg.AdminKubeconfigPath != "" {
			// Only a missing parent is created (0755, it is usually shared
			// like /etc/kubox); an existing one keeps its mode.
			if err := os.MkdirAll(filepath.Dir(cfg.AdminKubeconfigPath), 0o755); err != nil {
				return fmt.Errorf("write admin kubeconfig copy: %w", err)
			}
			if err := syncFile(ctx, cfg.AdminKubeconfigPath, data); err != nil {
				return fmt.Errorf("write admin kubeconfig copy: %w", err)
			}
		}
	}
	return nil
}

// buildKubeconfig returns a kubeconfig with the CA embedded and the client
// cert and key either embedded (embed: the file can be copied off the box as
// is) or referenced by path (client-go then reloads them when they change,
// and a renewal leaves the kubeconfig itself unchanged).
func buildKubeconfig(server string, caPEM []byte, certPath, keyPath string, embed bool) ([]byte, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read client key: %w", err)
	}
	c := clientcmdapi.NewConfig()
	c.Clusters[kubeconfigName] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: caPEM,
	}
	if embed {
		c.AuthInfos[kubeconfigName] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	} else {
		c.AuthInfos[kubeconfigName] = &clientcmdapi.AuthInfo{ClientCertificate: certPath, ClientKey: keyPath}
	}
	c.Contexts[kubeconfigName] = &clientcmdapi.Context{
		Cluster:  kubeconfigName,
		AuthInfo: kubeconfigName,
	}
	c.CurrentContext = kubeconfigName
	data, err := clientcmd.Write(*c)
	if err != nil {
		return nil, fmt.Errorf("serialize kubeconfig: %w", err)
	}
	return data, nil
}

// syncFile makes path hold data (0600): rewritten atomically if it differs,
// untouched if it is already identical.
func syncFile(ctx context.Context, path string, data []byte) error {
	wrote, err := fsutil.WriteFileIfChanged(path, data, modePrivate)
	if err != nil {
		return err
	}
	if wrote {
		slog.InfoContext(ctx, "bootstrap: wrote kubeconfig", "path", path)
	}
	return nil
}
