// Package scenario holds the Service and EndpointSlice objects the proxy
// tests and benchmarks feed kubox's service proxy (through a fake
// clientset: the proxier, and the kernel it programs, are real), and the
// measurements they share between this host (nftables) and the IPVS VM.
package scenario

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubox/kubox/proxy"
)

// Node is the node object the proxy runs for.
func Node(name string, ip net.IP) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}},
	}
}

// Service is a TCP Service with one port.
func Service(name string, clusterIP net.IP, port, targetPort int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP.String(),
			ClusterIPs: []string{clusterIP.String()},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{
				Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(targetPort),
			}},
		},
	}
}

// Slice is the EndpointSlice of a Service, all endpoints ready.
func Slice(service string, port int32, ips ...net.IP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: service + "-1", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return s
}

// Add returns ip + n.
func Add(ip net.IP, n int) net.IP {
	v := binary.BigEndian.Uint32(ip.To4()) + uint32(n)
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, v)
	return out
}

// Load is services Services of endpoints endpoints each: ClusterIPs from
// 10.96.1.0 up, endpoints from 10.245.0.1 up (no host answers them: the
// benchmarks measure programming, not traffic).
func Load(services, endpoints int) []runtime.Object {
	var objs []runtime.Object
	svcBase, epBase := net.IPv4(10, 96, 1, 0), net.IPv4(10, 245, 0, 1)
	for i := 0; i < services; i++ {
		name := fmt.Sprintf("load-%d", i)
		objs = append(objs, Service(name, Add(svcBase, i), 80, 8080))
		var ips []net.IP
		for j := 0; j < endpoints; j++ {
			ips = append(ips, Add(epBase, i*endpoints+j))
		}
		objs = append(objs, Slice(name, 8080, ips...))
	}
	return objs
}

// ChangedIP is the endpoint address EndpointChange puts in.
var ChangedIP = net.IPv4(10, 246, 0, 1)

// Figures are what the benchmarks report.
type Figures struct {
	Program time.Duration // proxy start until all Services are in the kernel
	Change  time.Duration // one endpoint changed in the API until it is in the kernel
}

// Measure starts p (which must have been Init'ed) against a client holding
// Load(services, endpoints), waits for the first full sync, then changes
// one endpoint of one Service and waits for the sync that carries it.
// inKernel tells whether the kernel has an endpoint address; the figures
// are the proxier's own sync end times, so the check does not skew them.
func Measure(ctx context.Context, p *proxy.Proxy, client kubernetes.Interface, services, endpoints int, minSync time.Duration, inKernel func(net.IP) (bool, error)) (Figures, error) {
	var f Figures
	begin := time.Now()
	if err := p.Start(ctx); err != nil {
		return f, err
	}
	if err := p.Ready(ctx); err != nil {
		return f, err
	}
	f.Program = time.Since(begin)
	last := Add(net.IPv4(10, 245, 0, 1), services*endpoints-1)
	if ok, err := inKernel(last); err != nil || !ok {
		return f, fmt.Errorf("after the first sync the kernel lacks endpoint %s: %v", last, err)
	}
	// Past the proxier's minimum interval between syncs, so the change
	// below is not held back by it.
	time.Sleep(minSync + 200*time.Millisecond)
	target := services / 2
	name := fmt.Sprintf("load-%d", target)
	var ips []net.IP
	for j := 0; j < endpoints; j++ {
		ips = append(ips, Add(net.IPv4(10, 245, 0, 1), target*endpoints+j))
	}
	ips[0] = ChangedIP
	slice := Slice(name, 8080, ips...)
	begin = time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		return f, fmt.Errorf("update %s: %w", name, err)
	}
	// The change's figure is the end of the first sync after which the
	// kernel has it: a sync already running when the change came (the
	// periodic resync) may end after begin without it.
	checked := begin
	for {
		if ctx.Err() != nil {
			return f, fmt.Errorf("the endpoint change did not reach the kernel: %w", ctx.Err())
		}
		s := p.Synced()
		if !s.After(checked) {
			time.Sleep(time.Millisecond)
			continue
		}
		checked = s
		ok, err := inKernel(ChangedIP)
		if err != nil {
			return f, err
		}
		if ok {
			f.Change = s.Sub(begin)
			break
		}
	}
	return f, nil
}
