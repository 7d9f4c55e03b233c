package leader

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// newClient is a fake clientset whose Leases have resource versions, as a
// real apiserver's do: the elector renews with an optimistic update, and
// only a version conflict tells it someone else wrote the Lease.
func newClient() *fake.Clientset {
	c := fake.NewClientset()
	var rv atomic.Int64
	c.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		return false, nil, nil
	})
	c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		cur, err := c.Tracker().Get(a.GetResource(), l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*coordinationv1.Lease).ResourceVersion != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), l.Name, errors.New("stale resource version"))
		}
		l.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		return false, nil, nil
	})
	return c
}

func testConfig(client kubernetes.Interface) Config {
	return Config{
		Namespace: "kube-system", Name: "thing", Identity: Identity("box1"), Client: client,
		LeaseDuration: time.Second, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
	}
}

func holder(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases("kube-system").Get(context.Background(), "thing", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// A lease taken away stops the work, Run does not return, and the work
// runs again once the other holder's lease has expired; a stop releases the
// lease.
func TestLostLeaseStopsWorkAndCampaignsAgain(t *testing.T) {
	client := newClient()
	cfg := testConfig(client)
	var terms, running atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, func(ctx context.Context) error {
			terms.Add(1)
			running.Add(1)
			defer running.Add(-1)
			<-ctx.Done()
			return errors.New("interrupted") // what upstream's Run may say; not a failure here
		})
	}()
	waitFor(t, "first term", func() bool { return running.Load() == 1 })
	if h := holder(t, client); h != cfg.Identity {
		t.Fatalf("holder %q, want %q", h, cfg.Identity)
	}

	// Steal it: another identity renewed just now, for 2 s.
	l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, "thing", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To("thief"), LeaseDurationSeconds: ptr.To[int32](2), AcquireTime: &now, RenewTime: &now}
	if _, err := client.CoordinationV1().Leases("kube-system").Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "work to stop after the lease was stolen", func() bool { return running.Load() == 0 })
	select {
	case err := <-done:
		t.Fatalf("Run returned after a lost lease: %v", err)
	default:
	}
	waitFor(t, "second term after the stolen lease expired", func() bool { return terms.Load() == 2 && running.Load() == 1 })
	if h := holder(t, client); h != cfg.Identity {
		t.Fatalf("holder %q after re-campaign, want %q", h, cfg.Identity)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after stop = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after stop")
	}
	if running.Load() != 0 {
		t.Fatal("work still running after Run returned")
	}
	if h := holder(t, client); h != "" {
		t.Fatalf("lease still held by %q after a stop, want released", h)
	}
}

// Work that ends on its own while the lease is held is a failure of the
// component: Run returns its error instead of campaigning again.
func TestWorkEndingOnItsOwnIsAFailure(t *testing.T) {
	client := newClient()
	err := Run(context.Background(), testConfig(client), func(ctx context.Context) error {
		return errors.New("controllers broke")
	})
	if err == nil || err.Error() != "controllers broke" {
		t.Fatalf("Run = %v, want the work's error", err)
	}
	if h := holder(t, client); h != "" {
		t.Fatalf("lease still held by %q after the work failed", h)
	}
}

// A stop while another box holds the lease returns at once, never running
// the work.
func TestStopWhileCampaigning(t *testing.T) {
	client := newClient()
	now := metav1.NewMicroTime(time.Now())
	_, err := client.CoordinationV1().Leases("kube-system").Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "thing"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("other"), LeaseDurationSeconds: ptr.To[int32](60), AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var ran atomic.Bool
	if err := Run(ctx, testConfig(client), func(ctx context.Context) error { ran.Store(true); return nil }); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("work ran while another box held the lease")
	}
	if h := holder(t, client); h != "other" {
		t.Fatalf("holder %q, want other", h)
	}
}
