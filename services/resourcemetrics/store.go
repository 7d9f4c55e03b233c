package resourcemetrics

import (
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/metrics/pkg/apis/metrics"
)

// point is a cumulative CPU counter at the time it was measured.
type point struct {
	at  time.Time
	cpu float64
}

// counter keeps the last two distinct measurements of a CPU counter: the
// usage is the rate between them. Scraping more often than the kubelet
// measures gives the same point again, which is ignored.
type counter struct{ prev, last point }

func (c *counter) add(at time.Time, cpu float64) {
	if !c.last.at.IsZero() && !at.After(c.last.at) {
		return
	}
	if !c.last.at.IsZero() && cpu < c.last.cpu {
		// A counter that went back started again: no rate until the next.
		c.prev, c.last = point{}, point{at: at, cpu: cpu}
		return
	}
	c.prev, c.last = c.last, point{at: at, cpu: cpu}
}

// rate is the CPU usage in cores between the last two points, the window
// it covers and when it ends.
func (c counter) rate() (cores float64, window time.Duration, at time.Time, ok bool) {
	if c.prev.at.IsZero() {
		return 0, 0, time.Time{}, false
	}
	window = c.last.at.Sub(c.prev.at)
	return (c.last.cpu - c.prev.cpu) / window.Seconds(), window, c.last.at, true
}

type nodeState struct {
	cpu    counter
	memory float64
	labels map[string]string
	pods   map[podKey]*podState
}

type podKey struct{ namespace, name string }

type podState struct{ containers map[string]*containerState }

type containerState struct {
	cpu    counter
	memory float64
	start  float64
}

// store holds what the scrapes measured, per node. Safe for concurrent use.
type store struct {
	mu    sync.RWMutex
	nodes map[string]*nodeState
}

func newStore() *store { return &store{nodes: map[string]*nodeState{}} }

// update merges a node's new sample into its state: counters of
// containers still running (same start time) carry on, the rest go.
func (s *store) update(node string, labels map[string]string, smp sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.nodes[node]
	n := &nodeState{labels: labels, pods: map[podKey]*podState{}}
	if old != nil {
		n.cpu = old.cpu
	}
	if smp.node.hasCPU {
		n.cpu.add(smp.node.cpuAt, smp.node.cpu)
	}
	n.memory = smp.node.memory
	if !smp.node.hasMem {
		n.memory = -1
	}
	for k, u := range smp.containers {
		if !u.hasCPU || !u.hasMem {
			continue
		}
		pk := podKey{k.namespace, k.pod}
		p := n.pods[pk]
		if p == nil {
			p = &podState{containers: map[string]*containerState{}}
			n.pods[pk] = p
		}
		c := &containerState{memory: u.memory, start: u.start}
		if old != nil {
			if op := old.pods[pk]; op != nil {
				if oc := op.containers[k.container]; oc != nil && oc.start == u.start {
					c.cpu = oc.cpu
				}
			}
		}
		c.cpu.add(u.cpuAt, u.cpu)
		p.containers[k.container] = c
	}
	s.nodes[node] = n
}

// forget drops nodes: gone from the cluster, or whose scrape failed
// (figures that are no longer measured are not served).
func (s *store) forget(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, node)
}

// retain drops every node not in keep.
func (s *store) retain(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.nodes {
		if !keep[n] {
			delete(s.nodes, n)
		}
	}
}

func cpuQuantity(cores float64) resource.Quantity {
	if cores < 0 {
		cores = 0
	}
	return *resource.NewScaledQuantity(int64(cores*1e9), resource.Nano)
}

func memoryQuantity(bytes float64) resource.Quantity {
	return *resource.NewQuantity(int64(bytes), resource.BinarySI)
}

// nodeMetrics returns the figures of the nodes that have a CPU rate and a
// memory figure, sorted by name.
func (s *store) nodeMetrics() []metrics.NodeMetrics {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]metrics.NodeMetrics, 0, len(s.nodes))
	for name, n := range s.nodes {
		cores, window, at, ok := n.cpu.rate()
		if !ok || n.memory < 0 {
			continue
		}
		out = append(out, metrics.NodeMetrics{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: n.labels, CreationTimestamp: metav1.NewTime(time.Now())},
			Timestamp:  metav1.NewTime(at),
			Window:     metav1.Duration{Duration: window},
			Usage: corev1.ResourceList{
				corev1.ResourceCPU:    cpuQuantity(cores),
				corev1.ResourceMemory: memoryQuantity(n.memory),
			},
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// podMetrics returns the figures of the pods each of whose containers has
// a CPU rate, sorted by namespace and name. A pod seen on two nodes (moved
// under the same name) is served from the newer figures.
func (s *store) podMetrics() []metrics.PodMetrics {
	s.mu.RLock()
	defer s.mu.RUnlock()
	byKey := map[podKey]metrics.PodMetrics{}
	for _, n := range s.nodes {
		for k, p := range n.pods {
			pm, ok := podMetricsOf(k, p)
			if !ok {
				continue
			}
			if prev, seen := byKey[k]; seen && !pm.Timestamp.After(prev.Timestamp.Time) {
				continue
			}
			byKey[k] = pm
		}
	}
	out := make([]metrics.PodMetrics, 0, len(byKey))
	for _, pm := range byKey {
		out = append(out, pm)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func podMetricsOf(k podKey, p *podState) (metrics.PodMetrics, bool) {
	pm := metrics.PodMetrics{ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name, CreationTimestamp: metav1.NewTime(time.Now())}}
	names := make([]string, 0, len(p.containers))
	for name := range p.containers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := p.containers[name]
		cores, window, at, ok := c.cpu.rate()
		if !ok {
			return metrics.PodMetrics{}, false
		}
		if at.After(pm.Timestamp.Time) {
			pm.Timestamp, pm.Window = metav1.NewTime(at), metav1.Duration{Duration: window}
		}
		pm.Containers = append(pm.Containers, metrics.ContainerMetrics{
			Name: name,
			Usage: corev1.ResourceList{
				corev1.ResourceCPU:    cpuQuantity(cores),
				corev1.ResourceMemory: memoryQuantity(c.memory),
			},
		})
	}
	return pm, len(pm.Containers) > 0
}
