package resourcemetrics

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/metrics/pkg/apis/metrics"
	metricsinstall "k8s.io/metrics/pkg/apis/metrics/install"
	"k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

// apiGroupInfo is metrics.k8s.io/v1beta1 (nodes, pods) over st, in a
// scheme of its own: nothing is registered into the apiserver's
// package-level legacy scheme.
func apiGroupInfo(st *store, pods podLister) *genericapiserver.APIGroupInfo {
	scheme := runtime.NewScheme()
	metricsinstall.Install(scheme)
	// List and get options, and the unversioned types every group serves.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	info := genericapiserver.NewDefaultAPIGroupInfo(metrics.GroupName, scheme, metav1.ParameterCodec, serializer.NewCodecFactory(scheme))
	info.VersionedResourcesStorageMap[v1beta1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"nodes": &nodeREST{st: st, TableConvertor: rest.NewDefaultTableConvertor(metrics.Resource("nodes"))},
		"pods":  &podREST{st: st, pods: pods, TableConvertor: rest.NewDefaultTableConvertor(metrics.Resource("pods"))},
	}
	return &info
}

// podLister lists the keys of the pods matching selectors the store
// cannot answer itself (the kubelet's figures carry no labels).
type podLister func(ctx context.Context, namespace string, opts metav1.ListOptions) (map[podKey]map[string]string, error)

type nodeREST struct {
	st *store
	rest.TableConvertor
}

var (
	_ rest.Storage              = (*nodeREST)(nil)
	_ rest.Getter               = (*nodeREST)(nil)
	_ rest.Lister               = (*nodeREST)(nil)
	_ rest.Scoper               = (*nodeREST)(nil)
	_ rest.KindProvider         = (*nodeREST)(nil)
	_ rest.SingularNameProvider = (*nodeREST)(nil)
)

func (*nodeREST) New() runtime.Object     { return &metrics.NodeMetrics{} }
func (*nodeREST) NewList() runtime.Object { return &metrics.NodeMetricsList{} }
func (*nodeREST) Destroy()                {}
func (*nodeREST) NamespaceScoped() bool   { return false }
func (*nodeREST) Kind() string            { return "NodeMetrics" }
func (*nodeREST) GetSingularName() string { return "node" }
func (r *nodeREST) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	for _, m := range r.st.nodeMetrics() {
		if m.Name == name {
			return &m, nil
		}
	}
	return nil, errors.NewNotFound(metrics.Resource("nodes"), name)
}

func (r *nodeREST) List(_ context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	ls, fs := selectors(opts)
	list := &metrics.NodeMetricsList{}
	for _, m := range r.st.nodeMetrics() {
		if ls.Matches(labels.Set(m.Labels)) && fs.Matches(fields.Set{"metadata.name": m.Name}) {
			list.Items = append(list.Items, m)
		}
	}
	return list, nil
}

type podREST struct {
	st   *store
	pods podLister
	rest.TableConvertor
}

var (
	_ rest.Storage              = (*podREST)(nil)
	_ rest.Getter               = (*podREST)(nil)
	_ rest.Lister               = (*podREST)(nil)
	_ rest.Scoper               = (*podREST)(nil)
	_ rest.KindProvider         = (*podREST)(nil)
	_ rest.SingularNameProvider = (*podREST)(nil)
)

func (*podREST) New() runtime.Object     { return &metrics.PodMetrics{} }
func (*podREST) NewList() runtime.Object { return &metrics.PodMetricsList{} }
func (*podREST) Destroy()                {}
func (*podREST) NamespaceScoped() bool   { return true }
func (*podREST) Kind() string            { return "PodMetrics" }
func (*podREST) GetSingularName() string { return "pod" }

func (r *podREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	for _, m := range r.st.podMetrics() {
		if m.Namespace == ns && m.Name == name {
			return &m, nil
		}
	}
	return nil, errors.NewNotFound(metrics.Resource("pods"), name)
}

func (r *podREST) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	ls, fs := selectors(opts)
	// The kubelet's figures carry no labels: a label selector (an HPA's,
	// kubectl top -l) is answered with the pods the API lists for it.
	var match map[podKey]map[string]string
	if !ls.Empty() {
		var err error
		match, err = r.pods(ctx, ns, metav1.ListOptions{LabelSelector: ls.String(), ResourceVersion: "0"})
		if err != nil {
			return nil, errors.NewInternalError(fmt.Errorf("list pods for selector %q: %w", ls, err))
		}
	}
	list := &metrics.PodMetricsList{}
	for _, m := range r.st.podMetrics() {
		if ns != "" && m.Namespace != ns {
			continue
		}
		if !fs.Matches(fields.Set{"metadata.name": m.Name, "metadata.namespace": m.Namespace}) {
			continue
		}
		if match != nil {
			l, ok := match[podKey{m.Namespace, m.Name}]
			if !ok {
				continue
			}
			m.Labels = l
		}
		list.Items = append(list.Items, m)
	}
	return list, nil
}

func selectors(opts *metainternalversion.ListOptions) (labels.Selector, fields.Selector) {
	ls, fs := labels.Everything(), fields.Everything()
	if opts != nil {
		if opts.LabelSelector != nil {
			ls = opts.LabelSelector
		}
		if opts.FieldSelector != nil {
			fs = opts.FieldSelector
		}
	}
	return ls, fs
}
