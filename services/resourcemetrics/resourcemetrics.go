// Package resourcemetrics serves the resource metrics API
// (metrics.k8s.io/v1beta1 NodeMetrics and PodMetrics: what `kubectl top`
// and a HorizontalPodAutoscaler on CPU or memory read) from inside kubox,
// with no metrics-server pod and no image.
//
// Every box scrapes every Node's kubelet (/metrics/resource, as the
// apiserver reaches kubelets) every Interval, keeps the last two
// measurements of each CPU counter and serves the rate between them. The
// group is installed into the box's own kube-apiserver (behind the
// aggregator, with its authentication, authorization and audit) and
// announced by a local APIService (no Service, no extra listener), so any
// box's apiserver answers for every node. Not kubox's Prometheus endpoint:
// that is package metrics.
package resourcemetrics

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	apiregistrationclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/typed/apiregistration/v1"
	"k8s.io/metrics/pkg/apis/metrics"
	"k8s.io/metrics/pkg/apis/metrics/v1beta1"

	"github.com/kubox/kubox/component"
)

// APIServiceName is the APIService that announces the group.
const APIServiceName = "v1beta1.metrics.k8s.io"

// managedBy marks the APIService as kubox's: only that one is ever
// deleted (a user's metrics-server keeps its own).
const managedBy = "app.kubernetes.io/managed-by"

// DefaultInterval is how often each kubelet is scraped: the kubelet's own
// measurements are about that far apart, and the HPA controller reads
// every 15 s.
const DefaultInterval = 15 * time.Second

// Config is one box's resource metrics API.
type Config struct {
	// Kubeconfig is the admin kubeconfig: Nodes and Pods are read, the
	// APIService written with it.
	Kubeconfig string
	// KubeletCA verifies kubelets' serving certs; KubeletCert and
	// KubeletKey are the client cert kubelets accept (the apiserver's).
	KubeletCA, KubeletCert, KubeletKey string
	// Interval between scrapes (0 = DefaultInterval).
	Interval time.Duration
	Log      *slog.Logger
}

// Server is the component ("metrics-api"). Install must be handed to the
// apiserver, which calls it before it serves; Start then scrapes and
// announces the group.
type Server struct {
	cfg     Config
	st      *store
	kubelet *kubeletClient
	run     component.Goroutine

	mu       sync.Mutex // guards the clients, set in Init and read by the apiserver's handlers
	client   kubernetes.Interface
	services apiregistrationclient.APIServicesGetter
}

var (
	_ component.Component   = (*Server)(nil)
	_ component.Initializer = (*Server)(nil)
)

// New returns the component for cfg.
func New(cfg Config) *Server {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Server{cfg: cfg, st: newStore(), kubelet: &kubeletClient{ca: cfg.KubeletCA, cert: cfg.KubeletCert, key: cfg.KubeletKey}}
}

func (s *Server) Name() string { return "metrics-api" }

// Init builds the API clients (the kubeconfig exists once the PKI is).
func (s *Server) Init(context.Context) error {
	client, services, err := clients(s.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.client, s.services = client, services
	s.mu.Unlock()
	return nil
}

func clients(kubeconfig string) (kubernetes.Interface, apiregistrationclient.APIServicesGetter, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API: load %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "kubox-metrics-api"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API: client: %w", err)
	}
	services, err := apiregistrationclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics API: apiregistration client: %w", err)
	}
	return client, services, nil
}

func (s *Server) clientset() kubernetes.Interface {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Install adds metrics.k8s.io to the kube-apiserver's own server, before
// it serves. Called by the apiserver component, from its start.
func (s *Server) Install(kube *genericapiserver.GenericAPIServer) error {
	if err := kube.InstallAPIGroup(apiGroupInfo(s.st, s.listPods)); err != nil {
		return fmt.Errorf("install %s: %w", metrics.GroupName, err)
	}
	// The apiserver's aggregated discovery lists it like an APIService's group.
	kube.AggregatedDiscoveryGroupManager.SetGroupVersionPriority(
		metav1.GroupVersion{Group: metrics.GroupName, Version: v1beta1.SchemeGroupVersion.Version}, 100, 100)
	return nil
}

func (s *Server) listPods(ctx context.Context, namespace string, opts metav1.ListOptions) (map[podKey]map[string]string, error) {
	client := s.clientset()
	if client == nil {
		return nil, fmt.Errorf("not started")
	}
	pods, err := client.CoreV1().Pods(namespace).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := make(map[podKey]map[string]string, len(pods.Items))
	for _, p := range pods.Items {
		out[podKey{p.Namespace, p.Name}] = p.Labels
	}
	return out, nil
}

// Start announces the group and scrapes in the background; both retry
// while the apiserver or a kubelet is not there.
func (s *Server) Start(ctx context.Context) error {
	if s.clientset() == nil {
		if err := s.Init(ctx); err != nil {
			return err
		}
	}
	s.run.Go(ctx, s.Name(), func(ctx context.Context) error {
		var wg sync.WaitGroup
		wg.Go(func() { s.announce(ctx) })
		s.scrapeLoop(ctx)
		wg.Wait()
		return nil
	})
	return nil
}

func (s *Server) Stop(ctx context.Context) error { return s.run.Stop(ctx) }

// announce makes sure the local APIService exists, until it does.
func (s *Server) announce(ctx context.Context) {
	s.mu.Lock()
	services := s.services
	s.mu.Unlock()
	var last error
	_ = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		err := ensureAPIService(ctx, services.APIServices(), s.cfg.Log)
		if err != nil && (last == nil || err.Error() != last.Error()) {
			s.cfg.Log.Warn("metrics API: announce the APIService (retrying)", "err", err)
		}
		last = err
		return err == nil, nil
	})
}

// ensureAPIService creates the local APIService, or leaves one alone that
// sends the group to a Service (a metrics-server the user installed).
func ensureAPIService(ctx context.Context, c apiregistrationclient.APIServiceInterface, log *slog.Logger) error {
	cur, err := c.Get(ctx, APIServiceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = c.Create(ctx, localAPIService(), metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create APIService %s: %w", APIServiceName, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get APIService %s: %w", APIServiceName, err)
	case cur.Spec.Service != nil:
		log.Info("metrics API: APIService "+APIServiceName+" sends the group to a Service; kubox leaves it alone",
			"service", cur.Spec.Service.Namespace+"/"+cur.Spec.Service.Name)
		return nil
	}
	return nil
}

func localAPIService() *apiregistrationv1.APIService {
	return &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: APIServiceName, Labels: map[string]string{managedBy: "kubox"}},
		Spec: apiregistrationv1.APIServiceSpec{
			Group: metrics.GroupName, Version: v1beta1.SchemeGroupVersion.Version,
			GroupPriorityMinimum: 100, VersionPriority: 100,
		},
	}
}

// RemoveAPIService deletes kubox's local APIService, if there is one: a
// box whose metrics API is off must not announce a group it does not
// serve. A user's APIService (one with a Service) stays.
func RemoveAPIService(ctx context.Context, kubeconfig string) error {
	_, services, err := clients(kubeconfig)
	if err != nil {
		return err
	}
	return removeAPIService(ctx, services.APIServices())
}

func removeAPIService(ctx context.Context, c apiregistrationclient.APIServiceInterface) error {
	cur, err := c.Get(ctx, APIServiceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get APIService %s: %w", APIServiceName, err)
	}
	if cur.Spec.Service != nil || cur.Labels[managedBy] != "kubox" {
		return nil
	}
	err = c.Delete(ctx, APIServiceName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete APIService %s: %w", APIServiceName, err)
	}
	return nil
}

// scrapeLoop scrapes every node now and then every Interval.
func (s *Server) scrapeLoop(ctx context.Context) {
	failing := map[string]string{} // node -> last error logged
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.scrapeAll(ctx, failing)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type result struct {
	node   string
	labels map[string]string
	smp    sample
	err    error
}

// scrapeAll scrapes every node's kubelet at once. A node whose scrape
// fails has no figures until two scrapes succeed again; failures are
// logged when they start and end, not every time.
func (s *Server) scrapeAll(ctx context.Context, failing map[string]string) {
	nodes, err := s.clientset().CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Log.Debug("metrics API: list nodes", "err", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.Interval, 10*time.Second))
	defer cancel()
	results := make(chan result, len(nodes.Items))
	keep := map[string]bool{}
	var wg sync.WaitGroup
	for i := range nodes.Items {
		n := &nodes.Items[i]
		keep[n.Name] = true
		addr, ok := kubeletAddress(n)
		if !ok {
			results <- result{node: n.Name, err: fmt.Errorf("the Node has no kubelet address yet")}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			smp, err := s.kubelet.scrape(ctx, addr)
			results <- result{node: n.Name, labels: n.Labels, smp: smp, err: err}
		}()
	}
	wg.Wait()
	close(results)
	s.st.retain(keep)
	for r := range results {
		if r.err != nil {
			s.st.forget(r.node)
			if failing[r.node] != r.err.Error() {
				s.cfg.Log.Warn("metrics API: scrape kubelet (its figures are left out until it answers)", "node", r.node, "err", r.err)
				failing[r.node] = r.err.Error()
			}
			continue
		}
		if _, was := failing[r.node]; was {
			s.cfg.Log.Info("metrics API: kubelet answers again", "node", r.node)
			delete(failing, r.node)
		}
		s.st.update(r.node, r.labels, r.smp)
	}
	for n := range failing {
		if !keep[n] {
			delete(failing, n)
		}
	}
}
