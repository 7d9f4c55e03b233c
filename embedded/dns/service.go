package dns

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	serviceName = "kube-dns"
	namespace   = "kube-system"
	// managedBy marks the EndpointSlices kubox keeps, so the endpointslice
	// controller leaves them alone and kubox finds them.
	managedBy = "kubox"
	// nodeLabel names the server node a slice points at.
	nodeLabel = "kubox.io/dns-node"
	// resyncEvery bounds how long a dead box stays in the Service after
	// its Node turns NotReady.
	resyncEvery = 10 * time.Second
)

// keepService makes sure of the kube-dns Service and this node's slice now
// and every resyncEvery until ctx ends, then marks this node's endpoint not
// ready so the proxy stops sending it queries.
func (d *DNS) keepService(ctx context.Context) {
	t := time.NewTicker(resyncEvery)
	defer t.Stop()
	logged := ""
	for {
		err := d.syncService(ctx, true)
		if err != nil && ctx.Err() == nil && err.Error() != logged {
			d.cfg.Log.Warn("cluster DNS Service not in place yet; retrying", "err", err)
			logged = err.Error()
		} else if err == nil {
			logged = ""
		}
		select {
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := d.applySlice(stopCtx, d.cfg.Client, false); err != nil {
				d.cfg.Log.Warn("could not mark this node's DNS endpoint not ready", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

// syncService ensures the Service, this node's slice (ready as given), and
// marks other server nodes' endpoints ready as their Nodes are.
func (d *DNS) syncService(ctx context.Context, ready bool) error {
	c := d.cfg.Client
	if err := d.ensureService(ctx, c); err != nil {
		return err
	}
	if err := d.applySlice(ctx, c, ready); err != nil {
		return err
	}
	return d.syncPeers(ctx, c)
}

// Service is the kube-dns Service: the cluster DNS address, no selector
// (kubox writes its endpoints).
func (d *DNS) Service() *corev1.Service {
	ip := d.cfg.ClusterDNS.String()
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: serviceName, Namespace: namespace,
			Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true", "app.kubernetes.io/managed-by": managedBy},
		},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(int32(d.cfg.Port))},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(int32(d.cfg.Port))},
			},
		},
	}
}

func (d *DNS) ensureService(ctx context.Context, c kubernetes.Interface) error {
	want := d.Service()
	svcs := c.CoreV1().Services(namespace)
	cur, err := svcs.Get(ctx, serviceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := svcs.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Service %s/%s: %w", namespace, serviceName, err)
		}
		d.cfg.Log.Info("created cluster DNS Service", "service", namespace+"/"+serviceName, "clusterIP", want.Spec.ClusterIP)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get Service %s/%s: %w", namespace, serviceName, err)
	}
	if cur.Spec.ClusterIP != want.Spec.ClusterIP {
		// A ClusterIP cannot change in place: --cluster-dns changed.
		if err := svcs.Delete(ctx, serviceName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace Service %s/%s (ClusterIP %s -> %s): %w", namespace, serviceName, cur.Spec.ClusterIP, want.Spec.ClusterIP, err)
		}
		d.cfg.Log.Info("cluster DNS address changed; replacing the Service", "from", cur.Spec.ClusterIP, "to", want.Spec.ClusterIP)
		return d.ensureService(ctx, c)
	}
	if len(cur.Spec.Selector) != 0 || !samePorts(cur.Spec.Ports, want.Spec.Ports) {
		cur.Spec.Selector = nil
		cur.Spec.Ports = want.Spec.Ports
		if _, err := svcs.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update Service %s/%s: %w", namespace, serviceName, err)
		}
	}
	return nil
}

func samePorts(a, b []corev1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Protocol != b[i].Protocol || a[i].Port != b[i].Port || a[i].TargetPort != b[i].TargetPort {
			return false
		}
	}
	return true
}

// SliceName is this node's EndpointSlice of the kube-dns Service.
func (d *DNS) SliceName() string { return serviceName + "-" + d.cfg.NodeName }

// Slice is this node's EndpointSlice: its DNS listener, for UDP and TCP.
func (d *DNS) Slice(ready bool) *discoveryv1.EndpointSlice {
	port := int32(d.cfg.Port)
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dnsName, tcpName := "dns", "dns-tcp"
	node := d.cfg.NodeName
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: d.SliceName(), Namespace: namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: serviceName,
				discoveryv1.LabelManagedBy:   managedBy,
				nodeLabel:                    node,
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{d.cfg.NodeIP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			NodeName:   &node,
		}},
		Ports: []discoveryv1.EndpointPort{
			{Name: &dnsName, Protocol: &udp, Port: &port},
			{Name: &tcpName, Protocol: &tcp, Port: &port},
		},
	}
}

func ptrTo[T any](v T) *T { return &v }

func (d *DNS) applySlice(ctx context.Context, c kubernetes.Interface, ready bool) error {
	want := d.Slice(ready)
	slices := c.DiscoveryV1().EndpointSlices(namespace)
	cur, err := slices.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := slices.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create EndpointSlice %s/%s: %w", namespace, want.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get EndpointSlice %s/%s: %w", namespace, want.Name, err)
	}
	if sliceEqual(cur, want) {
		return nil
	}
	cur.Labels, cur.AddressType, cur.Endpoints, cur.Ports = want.Labels, want.AddressType, want.Endpoints, want.Ports
	if _, err := slices.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update EndpointSlice %s/%s: %w", namespace, want.Name, err)
	}
	return nil
}

func sliceEqual(a, b *discoveryv1.EndpointSlice) bool {
	if len(a.Endpoints) != 1 || len(a.Ports) != len(b.Ports) || a.AddressType != b.AddressType {
		return false
	}
	for k, v := range b.Labels {
		if a.Labels[k] != v {
			return false
		}
	}
	ea, eb := a.Endpoints[0], b.Endpoints[0]
	if len(ea.Addresses) != 1 || ea.Addresses[0] != eb.Addresses[0] || !boolIs(ea.Conditions.Ready, *eb.Conditions.Ready) {
		return false
	}
	for i := range a.Ports {
		pa, pb := a.Ports[i], b.Ports[i]
		if pa.Port == nil || *pa.Port != *pb.Port || pa.Protocol == nil || *pa.Protocol != *pb.Protocol || pa.Name == nil || *pa.Name != *pb.Name {
			return false
		}
	}
	return true
}

func boolIs(p *bool, v bool) bool { return p != nil && *p == v }

// syncPeers marks the other server nodes' DNS endpoints ready exactly when
// their Node is Ready, so a dead box drops out of the Service.
func (d *DNS) syncPeers(ctx context.Context, c kubernetes.Interface) error {
	list, err := c.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + serviceName + "," + discoveryv1.LabelManagedBy + "=" + managedBy,
	})
	if err != nil {
		return fmt.Errorf("list kube-dns EndpointSlices: %w", err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		node := s.Labels[nodeLabel]
		if node == "" || node == d.cfg.NodeName || len(s.Endpoints) == 0 {
			continue
		}
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// A control-plane-only server has no Node: nothing to follow.
			continue
		}
		if err != nil {
			return fmt.Errorf("get Node %s: %w", node, err)
		}
		ready := nodeReady(n)
		if boolIs(s.Endpoints[0].Conditions.Ready, ready) {
			continue
		}
		for j := range s.Endpoints {
			s.Endpoints[j].Conditions.Ready = ptrTo(ready)
			s.Endpoints[j].Conditions.Serving = ptrTo(ready)
		}
		if _, err := c.DiscoveryV1().EndpointSlices(namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("update EndpointSlice %s: %w", s.Name, err)
		}
		d.cfg.Log.Info("server node's DNS endpoint readiness follows its Node", "node", node, "ready", ready)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
