package resourcemetrics

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorfake "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/fake"
	"k8s.io/metrics/pkg/apis/metrics"
)

// resourceText is what a kubelet's /metrics/resource says, at t0 (ms) plus
// the given offsets, with the CPU counters given.
func resourceText(ms int64, nodeCPU, webCPU, sideCPU float64, sideStart int) string {
	return fmt.Sprintf(`# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="web",namespace="shop",pod="web-1"} %[2]g %[1]d
container_cpu_usage_seconds_total{container="side",namespace="shop",pod="web-1"} %[4]g %[1]d
container_cpu_usage_seconds_total{container="app",namespace="other",pod="lone"} 1 %[1]d
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="web",namespace="shop",pod="web-1"} 1.048576e+07 %[1]d
container_memory_working_set_bytes{container="side",namespace="shop",pod="web-1"} 2.097152e+06 %[1]d
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="web",namespace="shop",pod="web-1"} 1.7e+09
container_start_time_seconds{container="side",namespace="shop",pod="web-1"} %[5]d
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total %[3]g %[1]d
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.073741824e+09 %[1]d
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
`, ms, webCPU, nodeCPU, sideCPU, sideStart)
}

const t0 = int64(1_700_000_000_000)

func mustParse(t *testing.T, text string) sample {
	t.Helper()
	s, err := parse(strings.NewReader(text), time.UnixMilli(0))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParse(t *testing.T) {
	s := mustParse(t, resourceText(t0, 100, 3, 0.5, 1700000001))
	if !s.node.hasCPU || s.node.cpu != 100 || !s.node.cpuAt.Equal(time.UnixMilli(t0)) || s.node.memory != 1<<30 {
		t.Errorf("node: %+v", s.node)
	}
	web := s.containers[containerKey{"shop", "web-1", "web"}]
	if web.cpu != 3 || web.memory != 10<<20 || web.start != 1.7e9 || !web.hasCPU || !web.hasMem {
		t.Errorf("web: %+v", web)
	}
	if lone := s.containers[containerKey{"other", "lone", "app"}]; lone.hasMem {
		t.Errorf("lone has no memory figure, parsed %+v", lone)
	}
	if _, err := parse(strings.NewReader("node_cpu_usage_seconds_total{ 1\n"), time.Now()); err == nil {
		t.Error("malformed text parsed")
	}
}

func TestCounter(t *testing.T) {
	var c counter
	at := time.UnixMilli(t0)
	c.add(at, 10)
	if _, _, _, ok := c.rate(); ok {
		t.Fatal("a rate from one point")
	}
	c.add(at, 10) // the kubelet did not measure again
	c.add(at.Add(10*time.Second), 15)
	cores, window, end, ok := c.rate()
	if !ok || cores != 0.5 || window != 10*time.Second || !end.Equal(at.Add(10*time.Second)) {
		t.Errorf("rate = %v over %v at %v (%v), want 0.5 over 10s", cores, window, end, ok)
	}
	c.add(at.Add(20*time.Second), 1) // restarted counter
	if _, _, _, ok := c.rate(); ok {
		t.Error("a rate across a counter reset")
	}
}

// Two scrapes give figures; a restarted container (new start time) has
// none until its second point; a pod any of whose containers lacks a rate
// is left out.
func TestStore(t *testing.T) {
	st := newStore()
	st.update("box-1", map[string]string{"zone": "a"}, mustParse(t, resourceText(t0, 100, 3, 0.5, 1700000001)))
	if n, p := st.nodeMetrics(), st.podMetrics(); len(n) != 0 || len(p) != 0 {
		t.Fatalf("figures after one scrape: %v %v", n, p)
	}
	st.update("box-1", map[string]string{"zone": "a"}, mustParse(t, resourceText(t0+15000, 115, 4.5, 0.65, 1700000001)))
	nodes := st.nodeMetrics()
	if len(nodes) != 1 || nodes[0].Name != "box-1" || nodes[0].Labels["zone"] != "a" {
		t.Fatalf("nodes: %+v", nodes)
	}
	if cpu := nodes[0].Usage[corev1.ResourceCPU]; cpu.MilliValue() != 1000 {
		t.Errorf("node cpu %v, want 1 core", cpu.String())
	}
	if mem := nodes[0].Usage[corev1.ResourceMemory]; mem.Value() != 1<<30 {
		t.Errorf("node memory %v", mem.String())
	}
	if nodes[0].Window.Duration != 15*time.Second || !nodes[0].Timestamp.Equal(ptrTime(time.UnixMilli(t0+15000))) {
		t.Errorf("node window %v at %v", nodes[0].Window, nodes[0].Timestamp)
	}
	pods := st.podMetrics()
	if len(pods) != 1 || pods[0].Name != "web-1" || len(pods[0].Containers) != 2 {
		t.Fatalf("pods: %+v", pods)
	}
	if side := pods[0].Containers[0]; side.Name != "side" || side.Usage.Cpu().MilliValue() != 10 || side.Usage.Memory().Value() != 2<<20 {
		t.Errorf("side: %v %v %v", side.Name, side.Usage.Cpu(), side.Usage.Memory())
	}
	if web := pods[0].Containers[1]; web.Usage.Cpu().MilliValue() != 100 {
		t.Errorf("web: %v", web.Usage.Cpu())
	}
	// The side container restarted: its new counter has one point.
	st.update("box-1", nil, mustParse(t, resourceText(t0+30000, 130, 6, 0.1, 1700000020)))
	if pods := st.podMetrics(); len(pods) != 0 {
		t.Errorf("pod with a restarted container served: %+v", pods)
	}
	st.retain(map[string]bool{})
	if n := st.nodeMetrics(); len(n) != 0 {
		t.Errorf("a node gone from the cluster is served: %v", n)
	}
}

func ptrTime(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// The REST storage answers gets and lists with selectors; a label
// selector on pods goes to the pod lister.
func TestREST(t *testing.T) {
	st := newStore()
	for i, ms := range []int64{t0, t0 + 15000} {
		st.update("box-1", map[string]string{"zone": "a"}, mustParse(t, resourceText(ms, 100+float64(i)*15, 3+float64(i), 0.5+float64(i), 1700000001)))
		st.update("box-2", map[string]string{"zone": "b"}, mustParse(t, "node_cpu_usage_seconds_total 1 "+fmt.Sprint(ms)+"\nnode_memory_working_set_bytes 5 "+fmt.Sprint(ms)+"\n"))
	}
	var asked metav1.ListOptions
	pods := func(_ context.Context, ns string, opts metav1.ListOptions) (map[podKey]map[string]string, error) {
		asked = opts
		return map[podKey]map[string]string{{"shop", "web-1"}: {"app": "web"}}, nil
	}
	info := apiGroupInfo(st, pods)
	storage := info.VersionedResourcesStorageMap["v1beta1"]
	nodeR, podR := storage["nodes"].(*nodeREST), storage["pods"].(*podREST)
	ctx := context.Background()

	list, err := nodeR.List(ctx, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"zone": "b"})})
	if err != nil {
		t.Fatal(err)
	}
	if items := list.(*metrics.NodeMetricsList).Items; len(items) != 1 || items[0].Name != "box-2" {
		t.Errorf("nodes zone=b: %+v", items)
	}
	if _, err := nodeR.Get(ctx, "box-3", nil); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("get absent node: %v", err)
	}

	shop := genericapirequest.WithNamespace(ctx, "shop")
	if obj, err := podR.Get(shop, "web-1", nil); err != nil || obj.(*metrics.PodMetrics).Name != "web-1" {
		t.Errorf("get pod: %v %v", obj, err)
	}
	if _, err := podR.Get(genericapirequest.WithNamespace(ctx, "other"), "web-1", nil); err == nil {
		t.Error("got a pod from another namespace")
	}
	all, err := podR.List(ctx, nil)
	if err != nil || len(all.(*metrics.PodMetricsList).Items) != 1 || asked.LabelSelector != "" {
		t.Errorf("all pods: %v %v (pod lister asked %+v)", all, err, asked)
	}
	sel, err := podR.List(shop, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "web"})})
	if err != nil {
		t.Fatal(err)
	}
	items := sel.(*metrics.PodMetricsList).Items
	if len(items) != 1 || items[0].Labels["app"] != "web" || asked.LabelSelector != "app=web" {
		t.Errorf("pods app=web: %+v (asked %+v)", items, asked)
	}
	podR.pods = func(context.Context, string, metav1.ListOptions) (map[podKey]map[string]string, error) {
		return map[podKey]map[string]string{}, nil
	}
	none, _ := podR.List(shop, &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"app": "db"})})
	if items := none.(*metrics.PodMetricsList).Items; len(items) != 0 {
		t.Errorf("pods app=db: %+v", items)
	}
}

// kubox creates its local APIService, leaves a user's (one with a
// Service) alone whether on or off, and removes only its own when off.
func TestAPIService(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	c := aggregatorfake.NewSimpleClientset().ApiregistrationV1().APIServices()
	if err := ensureAPIService(ctx, c, log); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, APIServiceName, metav1.GetOptions{})
	if err != nil || got.Spec.Service != nil || got.Spec.Group != "metrics.k8s.io" || got.Labels[managedBy] != "kubox" {
		t.Fatalf("created APIService: %+v %v", got, err)
	}
	if err := ensureAPIService(ctx, c, log); err != nil {
		t.Errorf("ensure again: %v", err)
	}
	if err := removeAPIService(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, APIServiceName, metav1.GetOptions{}); err == nil {
		t.Error("kubox's APIService survived the remove")
	}
	if err := removeAPIService(ctx, c); err != nil {
		t.Errorf("remove when absent: %v", err)
	}

	users := localAPIService()
	users.Labels = nil
	users.Spec.Service = &apiregistrationv1.ServiceReference{Namespace: "kube-system", Name: "metrics-server"}
	if _, err := c.Create(ctx, users, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ensureAPIService(ctx, c, log); err != nil {
		t.Fatal(err)
	}
	if err := removeAPIService(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, APIServiceName, metav1.GetOptions{}); err != nil || got.Spec.Service == nil || got.Spec.Service.Name != "metrics-server" {
		t.Errorf("the user's APIService was changed: %+v %v", got, err)
	}
}
