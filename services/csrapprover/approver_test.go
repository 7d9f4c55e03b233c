package csrapprover

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
)

var nodes = []Node{{Name: "box-1", IPs: []net.IP{net.ParseIP("10.0.0.1")}}}

type reqOpts struct {
	cn     string
	org    []string
	dns    []string
	ips    []net.IP
	uris   []*url.URL
	user   string
	groups []string
	signer string
	usages []certificatesv1.KeyUsage
}

func good() reqOpts {
	return reqOpts{
		cn: "system:node:box-1", org: []string{"system:nodes"},
		dns: []string{"box-1"}, ips: []net.IP{net.ParseIP("10.0.0.1")},
		user: "system:node:box-1", groups: []string{"system:nodes", "system:authenticated"},
		signer: certificatesv1.KubeletServingSignerName,
		usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
	}
}

func makeCSR(t *testing.T, o reqOpts) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: o.cn, Organization: o.org}, DNSNames: o.dns, IPAddresses: o.ips, URIs: o.uris,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certificatesv1.CertificateSigningRequest{}
	csr.Name = "csr-test"
	csr.Spec = certificatesv1.CertificateSigningRequestSpec{
		Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		SignerName: o.signer, Usages: o.usages, Username: o.user, Groups: o.groups,
	}
	return csr
}

func TestCheck(t *testing.T) {
	if err := Check(makeCSR(t, good()), nodes); err != nil {
		t.Fatalf("the kubelet's own request refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*reqOpts)
		want string
	}{
		{"another node's kubelet", func(o *reqOpts) { o.user, o.cn = "system:node:box-9", "system:node:box-9"; o.dns = []string{"box-9"} }, "not one kubox runs"},
		{"a user, not a node", func(o *reqOpts) { o.user, o.groups = "kubox-admin", []string{"system:masters"} }, "not a node"},
		{"node name without the nodes group", func(o *reqOpts) { o.groups = []string{"system:authenticated"} }, "not a node"},
		{"subject of another node", func(o *reqOpts) { o.cn = "system:node:box-2" }, "subject"},
		{"no organization", func(o *reqOpts) { o.org = nil }, "subject"},
		{"foreign DNS name", func(o *reqOpts) { o.dns = append(o.dns, "kubernetes.default") }, "DNS name"},
		{"foreign IP", func(o *reqOpts) { o.ips = append(o.ips, net.ParseIP("10.0.0.2")) }, "IP 10.0.0.2"},
		{"URI SAN", func(o *reqOpts) { o.uris = []*url.URL{{Scheme: "spiffe", Host: "x"}} }, "URI"},
		{"no SAN", func(o *reqOpts) { o.dns, o.ips = nil, nil }, "no DNS name or IP"},
		{"client auth usage", func(o *reqOpts) { o.usages = append(o.usages, certificatesv1.UsageClientAuth) }, "usage"},
		{"no server auth", func(o *reqOpts) { o.usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature} }, "server auth"},
		{"other signer", func(o *reqOpts) { o.signer = certificatesv1.KubeAPIServerClientKubeletSignerName }, "signer"},
	} {
		o := good()
		c.edit(&o)
		err := Check(makeCSR(t, o), nodes)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Check = %v, want a refusal mentioning %q", c.name, err, c.want)
		}
	}
	// A request whose PEM is not a CSR, or whose signature does not match.
	bad := makeCSR(t, good())
	bad.Spec.Request = []byte("garbage")
	if err := Check(bad, nodes); err == nil {
		t.Error("garbage request approved")
	}
	tampered := makeCSR(t, good())
	block, _ := pem.Decode(tampered.Spec.Request)
	block.Bytes[len(block.Bytes)-5] ^= 0xff
	tampered.Spec.Request = pem.EncodeToMemory(block)
	if err := Check(tampered, nodes); err == nil {
		t.Error("request with a broken signature approved")
	}
}
