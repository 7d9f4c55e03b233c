package apiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-helpers/auth/rbac/reconciliation"
	schedulingv1 "k8s.io/kubernetes/pkg/apis/scheduling/v1"
	rbacrest "k8s.io/kubernetes/pkg/registry/rbac/rest"
	schedulingrest "k8s.io/kubernetes/pkg/registry/scheduling/rest"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
)

// Upstream's post-start hooks that create the bootstrap RBAC policy and the
// system PriorityClasses poll with wait.Poll(1 s), which sleeps a full
// second before the first try, and /readyz waits for both: every start, cold
// or warm, paid that second. kubox turns them off and does the same work in
// hooks of its own that try at once and then every 100 ms.
var upstreamBootstrapHooks = []string{rbacrest.PostStartHookName, schedulingrest.PostStartHookName}

const (
	bootstrapRolesHook           = "kubox/bootstrap-roles"
	bootstrapPriorityClassesHook = "kubox/bootstrap-system-priority-classes"
	bootstrapRetry               = 100 * time.Millisecond
	// As upstream: a server that cannot write its policy in this time stops
	// (the hook's error is fatal) rather than serve without it.
	bootstrapTimeout = 30 * time.Second
	// Objects reconciled at once: a warm restart reads about 150 of them.
	bootstrapWorkers = 8
)

// addBootstrapHooks registers kubox's hooks on the server that runs (the
// aggregator's: hooks of its delegates were copied when it was built).
func addBootstrapHooks(s *genericapiserver.GenericAPIServer) error {
	if err := s.AddPostStartHook(bootstrapRolesHook, func(hc genericapiserver.PostStartHookContext) error {
		return bootstrapUntilDone(hc, "reconcile the bootstrap RBAC policy", ensureBootstrapPolicy)
	}); err != nil {
		return err
	}
	return s.AddPostStartHook(bootstrapPriorityClassesHook, func(hc genericapiserver.PostStartHookContext) error {
		return bootstrapUntilDone(hc, "create the system PriorityClasses", ensureSystemPriorityClasses)
	})
}

// bootstrapUntilDone runs step over the loopback client until it succeeds.
func bootstrapUntilDone(hc genericapiserver.PostStartHookContext, what string, step func(context.Context, kubernetes.Interface) error) error {
	client, err := kubernetes.NewForConfig(hc.LoopbackClientConfig)
	if err != nil {
		return fmt.Errorf("%s: loopback client: %w", what, err)
	}
	var last error
	err = wait.PollUntilContextTimeout(hc, bootstrapRetry, bootstrapTimeout, true, func(ctx context.Context) (bool, error) {
		last = step(ctx, client)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w (last: %v)", what, err, last)
	}
	return nil
}

// ensureBootstrapPolicy creates the default roles and bindings, or adds
// back what they lack (objects annotated rbac.authorization.kubernetes.io/autoupdate=false
// are left as they are), with upstream's reconciliation. Upstream also
// migrates roles of clusters made before Kubernetes 1.9 and 1.14; a kubox
// cluster was never one of them.
func ensureBootstrapPolicy(ctx context.Context, client kubernetes.Interface) error {
	// One read first: it fails fast while storage is not yet answering.
	if _, err := client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("list clusterroles: %w", err)
	}
	rbac, ns := client.RbacV1(), client.CoreV1().Namespaces()
	var jobs []func() error
	role := func(what string, owner reconciliation.RuleOwner, modifier reconciliation.RuleOwnerModifier) {
		opts := &reconciliation.ReconcileRoleOptions{Role: owner, Client: modifier, Confirm: true}
		jobs = append(jobs, func() error {
			return reconcile(ctx, what, func() error { _, err := opts.Run(); return err })
		})
	}
	binding := func(what string, b reconciliation.RoleBinding, modifier reconciliation.RoleBindingModifier) {
		opts := &reconciliation.ReconcileRoleBindingOptions{RoleBinding: b, Client: modifier, Confirm: true}
		jobs = append(jobs, func() error {
			return reconcile(ctx, what, func() error { _, err := opts.Run(); return err })
		})
	}
	for _, r := range append(bootstrappolicy.ClusterRoles(), bootstrappolicy.ControllerRoles()...) {
		role("clusterrole "+r.Name, reconciliation.ClusterRoleRuleOwner{ClusterRole: &r},
			reconciliation.ClusterRoleModifier{Client: rbac.ClusterRoles()})
	}
	for _, b := range append(bootstrappolicy.ClusterRoleBindings(), bootstrappolicy.ControllerRoleBindings()...) {
		binding("clusterrolebinding "+b.Name, reconciliation.ClusterRoleBindingAdapter{ClusterRoleBinding: &b},
			reconciliation.ClusterRoleBindingClientAdapter{Client: rbac.ClusterRoleBindings()})
	}
	for namespace, roles := range bootstrappolicy.NamespaceRoles() {
		for _, r := range roles {
			role("role "+namespace+"/"+r.Name, reconciliation.RoleRuleOwner{Role: &r},
				reconciliation.RoleModifier{Client: rbac, NamespaceClient: ns})
		}
	}
	for namespace, bindings := range bootstrappolicy.NamespaceRoleBindings() {
		for _, b := range bindings {
			binding("rolebinding "+namespace+"/"+b.Name, reconciliation.RoleBindingAdapter{RoleBinding: &b},
				reconciliation.RoleBindingClientAdapter{Client: rbac, NamespaceClient: ns})
		}
	}
	return runBounded(jobs, bootstrapWorkers)
}

// runBounded runs every job, at most workers at a time, and joins their
// errors: as upstream, one failure does not stop the others.
func runBounded(jobs []func() error, workers int) error {
	errs := make([]error, len(jobs))
	var g errgroup.Group
	g.SetLimit(workers)
	for i, job := range jobs {
		g.Go(func() error {
			errs[i] = job()
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// reconcile runs one object's reconciliation, again on the errors upstream's
// hook retries: a write race, or storage busy with a storage-version update.
func reconcile(ctx context.Context, what string, run func() error) error {
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsServiceUnavailable(err) }
	err := retry.OnError(retry.DefaultBackoff, retriable, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return run()
	})
	if err != nil {
		return fmt.Errorf("reconcile %s: %w", what, err)
	}
	return nil
}

// ensureSystemPriorityClasses creates system-node-critical and
// system-cluster-critical where missing (their values are fixed; admission
// refuses changes to them).
func ensureSystemPriorityClasses(ctx context.Context, client kubernetes.Interface) error {
	pcs := client.SchedulingV1().PriorityClasses()
	for _, pc := range schedulingv1.SystemPriorityClasses() {
		_, err := pcs.Get(ctx, pc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = pcs.Create(ctx, pc, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("priorityclass %s: %w", pc.Name, err)
		}
	}
	return nil
}
