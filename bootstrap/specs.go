package bootstrap

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
)

// leaves lists every leaf certificate with what it must contain for cfg.
func (p *PKI) leaves(cfg Config, cas *authorities) ([]leaf, error) {
	serviceIP, err := firstServiceIP(cfg.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("apiserver certificate SANs: %w", err)
	}
	loopback4 := net.IPv4(127, 0, 0, 1).To4()
	node := cfg.NodeName

	apiDNS := []string{node, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + cfg.ClusterDomain}
	apiIPs := append(slices.Clone(cfg.NodeIPs), loopback4, serviceIP)
	// The kubeconfigs point at APIServerURL, so the serving cert must cover
	// its host whatever it is (a VIP, a DNS name).
	if h := cfg.apiServerHost(); h != "" {
		if ip := net.ParseIP(h); ip != nil {
			apiIPs = append(apiIPs, ip)
		} else {
			apiDNS = append(apiDNS, strings.ToLower(h))
		}
	}

	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	nodeSubject := "system:node:" + node

	return []leaf{
		{name: "apiserver", ca: cas.cluster, certPath: p.APIServerCert, keyPath: p.APIServerKey, spec: certSpec{
			commonName: "kube-apiserver", dnsNames: dedupNames(apiDNS), ips: dedupIPs(apiIPs), usages: server}},
		// etcd's gRPC gateway dials the server with the server's own cert, so
		// the server cert needs client auth too (as kubeadm issues it).
		{name: "etcd server", ca: cas.etcdServer, certPath: p.EtcdServerCert, keyPath: p.EtcdServerKey, spec: certSpec{
			commonName: node, dnsNames: dedupNames([]string{"localhost", node}),
			ips: dedupIPs(append([]net.IP{loopback4, net.IPv6loopback}, cfg.NodeIPs...)), usages: both}},
		{name: "etcd peer", ca: cas.etcdPeer, certPath: p.EtcdPeerCert, keyPath: p.EtcdPeerKey, spec: certSpec{
			commonName: node, dnsNames: dedupNames([]string{node, "localhost"}),
			ips: dedupIPs(append(slices.Clone(cfg.NodeIPs), loopback4)), usages: both}},
		{name: "etcd client", ca: cas.etcdServer, certPath: p.EtcdClientCert, keyPath: p.EtcdClientKey, spec: certSpec{
			commonName: "kube-apiserver-etcd-client", usages: client}},
		{name: "front-proxy client", ca: cas.requestHeader, certPath: p.FrontProxyClientCert, keyPath: p.FrontProxyClientKey, spec: certSpec{
			commonName: "front-proxy-client", usages: client}},
		{name: "apiserver kubelet client", ca: cas.client, certPath: p.APIServerKubeletClientCert, keyPath: p.APIServerKubeletClientKey, spec: certSpec{
			commonName: "kube-apiserver-kubelet-client", organization: []string{"system:masters"}, usages: client}},
		{name: "kubelet client", ca: cas.client, certPath: p.KubeletClientCert, keyPath: p.KubeletClientKey, spec: certSpec{
			commonName: nodeSubject, organization: []string{"system:nodes"}, usages: client}},
		{name: "controller-manager", ca: cas.client, certPath: p.ControllerManagerCert, keyPath: p.ControllerManagerKey, spec: certSpec{
			commonName: "system:kube-controller-manager", usages: client}},
		{name: "scheduler", ca: cas.client, certPath: p.SchedulerCert, keyPath: p.SchedulerKey, spec: certSpec{
			commonName: "system:kube-scheduler", usages: client}},
		{name: "admin", ca: cas.client, certPath: p.AdminCert, keyPath: p.AdminKey, spec: certSpec{
			commonName: "kubox-admin", organization: []string{"system:masters"}, usages: client}},
	}, nil
}

// dedupNames drops empty and repeated (case-insensitively) DNS names.
func dedupNames(in []string) []string {
	var out []string
	for _, n := range in {
		if n != "" && !slices.ContainsFunc(out, func(s string) bool { return strings.EqualFold(s, n) }) {
			out = append(out, n)
		}
	}
	return out
}

// dedupIPs drops repeated IPs and stores IPv4 addresses in 4-byte form.
func dedupIPs(in []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range in {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}
