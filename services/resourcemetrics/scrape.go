package resourcemetrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
)

// sample is one scrape of a kubelet's /metrics/resource: the node's and
// each running container's figures, as the kubelet stamped them.
type sample struct {
	node       usage
	containers map[containerKey]usage
}

type containerKey struct{ namespace, pod, container string }

// usage is a cumulative CPU counter (seconds) and a memory working set
// (bytes), each with the time the kubelet measured it. start is the
// container's start time (unix seconds): a new one means a new counter.
type usage struct {
	cpu            float64
	cpuAt          time.Time
	memory         float64
	memAt          time.Time
	hasCPU, hasMem bool
	start          float64
}

// The kubelet's resource metrics (its /metrics/resource endpoint, fed by
// cAdvisor or the CRI), the same the metrics-server reads.
const (
	nodeCPU         = "node_cpu_usage_seconds_total"
	nodeMemory      = "node_memory_working_set_bytes"
	containerCPU    = "container_cpu_usage_seconds_total"
	containerMemory = "container_memory_working_set_bytes"
	containerStart  = "container_start_time_seconds"
)

// parse reads the Prometheus text of /metrics/resource. Samples without a
// timestamp get now.
func parse(r io.Reader, now time.Time) (sample, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return sample{}, fmt.Errorf("parse resource metrics: %w", err)
	}
	s := sample{containers: map[containerKey]usage{}}
	at := func(m *dto.Metric) time.Time {
		if m.TimestampMs != nil {
			return time.UnixMilli(m.GetTimestampMs())
		}
		return now
	}
	for _, m := range families[nodeCPU].GetMetric() {
		s.node.cpu, s.node.cpuAt, s.node.hasCPU = value(m), at(m), true
	}
	for _, m := range families[nodeMemory].GetMetric() {
		s.node.memory, s.node.memAt, s.node.hasMem = value(m), at(m), true
	}
	each := func(name string, set func(u *usage, m *dto.Metric)) {
		for _, m := range families[name].GetMetric() {
			k := keyOf(m)
			if k.pod == "" || k.container == "" {
				continue
			}
			u := s.containers[k]
			set(&u, m)
			s.containers[k] = u
		}
	}
	each(containerCPU, func(u *usage, m *dto.Metric) { u.cpu, u.cpuAt, u.hasCPU = value(m), at(m), true })
	each(containerMemory, func(u *usage, m *dto.Metric) { u.memory, u.memAt, u.hasMem = value(m), at(m), true })
	each(containerStart, func(u *usage, m *dto.Metric) { u.start = value(m) })
	return s, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	default:
		return m.Untyped.GetValue()
	}
}

func keyOf(m *dto.Metric) containerKey {
	var k containerKey
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "namespace":
			k.namespace = l.GetValue()
		case "pod":
			k.pod = l.GetValue()
		case "container":
			k.container = l.GetValue()
		}
	}
	return k
}

// kubeletAddress is where the node's kubelet serves: its first address of
// the kinds the apiserver prefers, and the port the node reports.
func kubeletAddress(n *corev1.Node) (string, bool) {
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if port == 0 {
		return "", false
	}
	for _, kind := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeHostName, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == kind && a.Address != "" {
				return net.JoinHostPort(a.Address, strconv.Itoa(int(port))), true
			}
		}
	}
	return "", false
}

// kubeletClient reaches kubelets as the apiserver does: the apiserver's
// kubelet client certificate, the kubelets' serving certs checked
// against the cluster CA. The files are read again when one changes
// (renewal, CA rotation).
type kubeletClient struct {
	ca, cert, key string

	mu     sync.Mutex
	stamp  string
	client *http.Client
}

func (k *kubeletClient) get() (*http.Client, error) {
	stamp := ""
	for _, f := range []string{k.ca, k.cert, k.key} {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("kubelet client TLS: %w", err)
		}
		stamp += fi.ModTime().String() + strconv.FormatInt(fi.Size(), 10)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.client != nil && stamp == k.stamp {
		return k.client, nil
	}
	caPEM, err := os.ReadFile(k.ca)
	if err != nil {
		return nil, fmt.Errorf("kubelet client TLS: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kubelet client TLS: no certificate in %s", k.ca)
	}
	pair, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fmt.Errorf("kubelet client TLS: load client cert: %w", err)
	}
	if k.client != nil {
		k.client.CloseIdleConnections()
	}
	k.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     time.Minute,
		},
	}
	k.stamp = stamp
	return k.client, nil
}

// scrape reads one kubelet's resource metrics.
func (k *kubeletClient) scrape(ctx context.Context, address string) (sample, error) {
	c, err := k.get()
	if err != nil {
		return sample{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+address+"/metrics/resource", nil)
	if err != nil {
		return sample{}, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sample{}, fmt.Errorf("GET /metrics/resource: %s", resp.Status)
	}
	return parse(resp.Body, time.Now())
}
