package bootstrap

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// PKI holds the paths of everything Ensure keeps in place.
type PKI struct {
	Dir string

	CACert, CAKey                                         string // cluster CA: signs serving certs (apiserver; kubelets' via the controller-manager)
	ClientCACert, ClientCAKey                             string // client CA: signs every client cert
	RequestHeaderCACert, RequestHeaderCAKey               string
	FrontProxyClientCert, FrontProxyClientKey             string // CN front-proxy-client, signed by request-header CA
	EtcdServerCACert, EtcdServerCAKey                     string
	EtcdPeerCACert, EtcdPeerCAKey                         string
	EtcdServerCert, EtcdServerKey                         string // SANs: localhost, 127.0.0.1, ::1, node name, node IPs
	EtcdPeerCert, EtcdPeerKey                             string // SANs: node name, node IPs, localhost, 127.0.0.1; usage server+client auth
	EtcdClientCert, EtcdClientKey                         string // apiserver/kubox -> etcd; signed by etcd server CA; CN kube-apiserver-etcd-client
	ServiceAccountKey, ServiceAccountPub                  string // ECDSA P-256 key pair (PEM) for service-account tokens
	APIServerCert, APIServerKey                           string // apiserver serving cert
	APIServerKubeletClientCert, APIServerKubeletClientKey string // CN kube-apiserver-kubelet-client, O system:masters
	KubeletClientCert, KubeletClientKey                   string // CN system:node:<NodeName>, O system:nodes
	ControllerManagerCert, ControllerManagerKey           string // CN system:kube-controller-manager
	SchedulerCert, SchedulerKey                           string // CN system:kube-scheduler
	AdminCert, AdminKey                                   string // CN kubox-admin, O system:masters
	EncryptionConfig                                      string // apiserver EncryptionConfiguration (secretbox, then identity); 0600

	// In KubeconfigDir; certificate data embedded, server = APIServerURL, CA = cluster CA.
	AdminKubeconfig, ControllerManagerKubeconfig, SchedulerKubeconfig, KubeletKubeconfig string
}

// layout returns the file paths for dir and kubeconfigDir without touching
// the disk.
func layout(dir, kubeconfigDir string) *PKI {
	f := func(name string) string { return filepath.Join(dir, name) }
	e := func(name string) string { return filepath.Join(dir, "etcd", name) }
	k := func(name string) string { return filepath.Join(kubeconfigDir, name) }
	return &PKI{
		Dir: dir,

		CACert: f("ca.crt"), CAKey: f("ca.key"),
		ClientCACert: f("client-ca.crt"), ClientCAKey: f("client-ca.key"),
		RequestHeaderCACert: f("request-header-ca.crt"), RequestHeaderCAKey: f("request-header-ca.key"),
		FrontProxyClientCert: f("front-proxy-client.crt"), FrontProxyClientKey: f("front-proxy-client.key"),

		EtcdServerCACert: e("server-ca.crt"), EtcdServerCAKey: e("server-ca.key"),
		EtcdPeerCACert: e("peer-ca.crt"), EtcdPeerCAKey: e("peer-ca.key"),
		EtcdServerCert: e("server.crt"), EtcdServerKey: e("server.key"),
		EtcdPeerCert: e("peer.crt"), EtcdPeerKey: e("peer.key"),
		EtcdClientCert: e("client.crt"), EtcdClientKey: e("client.key"),

		ServiceAccountKey: f("sa.key"), ServiceAccountPub: f("sa.pub"),
		APIServerCert: f("apiserver.crt"), APIServerKey: f("apiserver.key"),
		APIServerKubeletClientCert: f("apiserver-kubelet-client.crt"), APIServerKubeletClientKey: f("apiserver-kubelet-client.key"),
		KubeletClientCert: f("kubelet-client.crt"), KubeletClientKey: f("kubelet-client.key"),
		ControllerManagerCert: f("controller-manager.crt"), ControllerManagerKey: f("controller-manager.key"),
		SchedulerCert: f("scheduler.crt"), SchedulerKey: f("scheduler.key"),
		AdminCert: f("admin.crt"), AdminKey: f("admin.key"),
		EncryptionConfig: f("encryption-config.yaml"),

		AdminKubeconfig:             k("admin.kubeconfig"),
		ControllerManagerKubeconfig: k("controller-manager.kubeconfig"),
		SchedulerKubeconfig:         k("scheduler.kubeconfig"),
		KubeletKubeconfig:           k("kubelet.kubeconfig"),
	}
}

// authorities are the CAs of one PKI, loaded.
type authorities struct {
	cluster, client, requestHeader, etcdServer, etcdPeer *authority
}

// Ensure loads or creates everything in the PKI and returns the paths. It is
// safe to call on every start; see the package doc for what it changes.
func Ensure(ctx context.Context, cfg Config) (*PKI, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	cfg.KubeconfigDir = filepath.Clean(cfg.KubeconfigDir)
	p := layout(cfg.Dir, cfg.KubeconfigDir)
	// One timestamp for the whole run keeps the certs of one start consistent.
	now := cfg.Now()

	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "etcd"), cfg.KubeconfigDir} {
		if err := fsutil.EnsureDir(d, modeDir); err != nil {
			return nil, fmt.Errorf("prepare PKI: %w", err)
		}
	}

	cas, err := p.ensureAuthorities(ctx, now)
	if err != nil {
		return nil, err
	}
	if err := p.retireKubeletServing(ctx, now); err != nil {
		return nil, err
	}

	leaves, err := p.leaves(cfg, cas)
	if err != nil {
		return nil, err
	}
	for _, l := range leaves {
		l.spec.lifetime = cfg.LeafLifetime
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := ensureLeaf(ctx, l, now); err != nil {
			return nil, err
		}
	}

	if err := ensureServiceAccountKey(ctx, p.ServiceAccountKey, p.ServiceAccountPub); err != nil {
		return nil, err
	}
	if err := ensureEncryptionConfig(ctx, p.EncryptionConfig); err != nil {
		return nil, err
	}
	if err := p.writeKubeconfigs(ctx, cfg, cas.cluster); err != nil {
		return nil, err
	}
	return p, nil
}

// ensureAuthorities loads or creates the five CAs.
func (p *PKI) ensureAuthorities(ctx context.Context, now time.Time) (*authorities, error) {
	var cas authorities
	for _, c := range []struct {
		dst                     **authority
		name, certPath, keyPath string
	}{
		{&cas.cluster, "ca", p.CACert, p.CAKey},
		{&cas.client, "client-ca", p.ClientCACert, p.ClientCAKey},
		{&cas.requestHeader, "request-header-ca", p.RequestHeaderCACert, p.RequestHeaderCAKey},
		{&cas.etcdServer, "etcd-server-ca", p.EtcdServerCACert, p.EtcdServerCAKey},
		{&cas.etcdPeer, "etcd-peer-ca", p.EtcdPeerCACert, p.EtcdPeerCAKey},
	} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		a, err := ensureCA(ctx, c.name, c.certPath, c.keyPath, now)
		if err != nil {
			return nil, err
		}
		*c.dst = a
	}
	return &cas, nil
}
