// Package csrapprover approves the kubelet serving certificate requests of
// the nodes kubox itself runs, and only those: the kubelet asks for its
// serving certificate with a CertificateSigningRequest (serverTLSBootstrap),
// the controller-manager's csrsigning controller signs approved ones with
// the cluster CA, and the apiserver verifies the kubelet against that CA
// (kubectl logs/exec). Upstream approves no kubelet-serving request by
// itself; approving every one would let any node, or anyone who may create
// CSRs, obtain a certificate for another node's names.
package csrapprover

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubox/kubox/component"
)

// Node is a node whose kubelet may get a serving certificate: its name and
// every name and address the certificate may carry.
type Node struct {
	Name string
	DNS  []string // besides Name
	IPs  []net.IP
}

// Config says which nodes are kubox's own.
type Config struct {
	Client kubernetes.Interface
	// Nodes returns the nodes kubox runs (this box; later the cluster's
	// server nodes). Asked on every request, so it may change.
	Nodes func() []Node
	Log   *slog.Logger
}

// Approver is the component.
type Approver struct {
	cfg Config
	mu  sync.Mutex
	// ignored remembers requests already logged as left alone.
	ignored map[string]bool
	watch   component.Goroutine
}

// The watch ends only when stopped (the informer retries on its own), so
// the approver is not a component.Failer.
var _ component.Component = (*Approver)(nil)

// New returns an approver for cfg.
func New(cfg Config) *Approver {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Approver{cfg: cfg, ignored: map[string]bool{}}
}

func (a *Approver) Name() string                   { return "csr-approver" }
func (a *Approver) Stop(ctx context.Context) error { return a.watch.Stop(ctx) }

// Start watches kubelet-serving requests and decides each pending one.
func (a *Approver) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.cfg.Client, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", certificatesv1.KubeletServingSignerName).String()
		}))
	inf := factory.Certificates().V1().CertificateSigningRequests().Informer()
	handle := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
			a.handle(ctx, csr)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		return fmt.Errorf("watch certificate signing requests: %w", err)
	}
	a.watch.Go(ctx, "csr approver", func(ctx context.Context) error {
		factory.Start(ctx.Done())
		<-ctx.Done()
		factory.Shutdown()
		return nil
	})
	return nil
}

func (a *Approver) handle(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) {
	if decided(csr) {
		return
	}
	if err := Check(csr, a.cfg.Nodes()); err != nil {
		a.mu.Lock()
		seen := a.ignored[csr.Name]
		a.ignored[csr.Name] = true
		a.mu.Unlock()
		if !seen {
			a.cfg.Log.Info("left a kubelet serving certificate request alone", "csr", csr.Name, "requester", csr.Spec.Username, "reason", err)
		}
		return
	}
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type:           certificatesv1.CertificateApproved,
		Status:         corev1.ConditionTrue,
		Reason:         "KuboxNodeServingCert",
		Message:        "kubox approved the serving certificate of its own node " + csr.Spec.Username,
		LastUpdateTime: metav1.Now(),
	})
	if _, err := a.cfg.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		// The informer's resync, or the kubelet's next request, tries again.
		a.cfg.Log.Warn("approve kubelet serving certificate request", "csr", csr.Name, "err", err)
		return
	}
	a.cfg.Log.Info("approved kubelet serving certificate request", "csr", csr.Name, "node", csr.Spec.Username)
}

// decided reports whether the request was approved or denied already.
func decided(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return true
		}
	}
	return false
}

// Check returns nil if csr is a kubelet serving request that kubox
// approves: made by the kubelet of one of nodes (as system:node:<name> in
// group system:nodes), for exactly that identity, for server auth only,
// with names and addresses of that node only. Otherwise it says why not.
func Check(csr *certificatesv1.CertificateSigningRequest, nodes []Node) error {
	const prefix = "system:node:"
	if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
		return fmt.Errorf("signer %q is not %s", csr.Spec.SignerName, certificatesv1.KubeletServingSignerName)
	}
	user := csr.Spec.Username
	if len(user) <= len(prefix) || user[:len(prefix)] != prefix || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return fmt.Errorf("requester %q is not a node", user)
	}
	i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == user[len(prefix):] })
	if i < 0 {
		return fmt.Errorf("node %q is not one kubox runs", user[len(prefix):])
	}
	node := nodes[i]
	for _, u := range csr.Spec.Usages {
		switch u {
		case certificatesv1.UsageServerAuth, certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment:
		default:
			return fmt.Errorf("usage %q is not for a serving certificate", u)
		}
	}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return fmt.Errorf("no server auth usage")
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return fmt.Errorf("request is not a PEM certificate request")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return fmt.Errorf("request signature: %w", err)
	}
	if req.Subject.CommonName != user || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return fmt.Errorf("subject %q is not %s in system:nodes", req.Subject.String(), user)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return fmt.Errorf("request carries e-mail or URI names")
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return fmt.Errorf("request names no DNS name or IP")
	}
	for _, d := range req.DNSNames {
		if d != node.Name && !slices.Contains(node.DNS, d) {
			return fmt.Errorf("DNS name %q is not node %s's", d, node.Name)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(node.IPs, ip.Equal) {
			return fmt.Errorf("IP %s is not node %s's", ip, node.Name)
		}
	}
	return nil
}
