// Package leader runs a piece of work on one box at a time: it campaigns for
// a coordination.k8s.io Lease and runs the work while it holds it.
//
// Upstream's controller manager and scheduler do this themselves but exit
// the process when they lose their lease; in kubox that process is also etcd
// and the kubelet. Here a lost lease only cancels the work: Run waits for it
// to return and campaigns again.
package leader

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	componentbaseconfig "k8s.io/component-base/config"

	"github.com/kubox/kubox/internal/fsutil"
)

// Config names the Lease and how it is held.
type Config struct {
	// Namespace and Name of the Lease (kube-system/kube-controller-manager).
	Namespace, Name string
	// Identity written into the Lease; unique per process (see Identity).
	Identity string
	// Client writes the Lease (see NewClient) and the events about it.
	Client kubernetes.Interface
	// Upstream's defaults are 15 s, 10 s and 2 s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Identity is node (default: the host name, as upstream uses) plus a
// random suffix: a restarted process must not pass for its previous run,
// which may still hold the lease.
func Identity(node string) string {
	if node == "" {
		node, _ = os.Hostname()
	}
	return node + "_" + string(uuid.NewUUID())
}

// KeptOrNew is kept when the caller keeps an identity (see StableIdentity),
// else a new Identity for node.
func KeptOrNew(kept, node string) string {
	if kept != "" {
		return kept
	}
	return Identity(node)
}

// StableIdentity is Identity kept in file, so that a box restarted after a
// crash or power cut is the holder of the lease its previous run took and
// renews it at once, instead of waiting for it to expire (up to the lease
// duration plus a retry, about 17 s) with no controllers running. Unlike
// upstream's processes, a kubox server holds its data dir's lock, so its
// previous run cannot still be alive. A file naming another node (the node
// was renamed) is replaced.
func StableIdentity(file, node string) (string, error) {
	if node == "" {
		node, _ = os.Hostname()
	}
	if b, err := os.ReadFile(file); err == nil {
		if id := strings.TrimSpace(string(b)); strings.HasPrefix(id, node+"_") && len(id) > len(node)+1 {
			return id, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read lease identity %s: %w", file, err)
	}
	id := Identity(node)
	if err := fsutil.WriteFileAtomic(file, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write lease identity %s: %w", file, err)
	}
	return id, nil
}

// Upstream is the Config of a component that upstream elects with le (its
// lease name and timings), as identity: its client is made from the
// component's own connection rc, and its requests are bounded by the renew
// deadline, as upstream's are, so a hung request cannot outlive the
// deadline it is part of.
func Upstream(le componentbaseconfig.LeaderElectionConfiguration, rc *rest.Config, component, identity string, log *slog.Logger) (Config, error) {
	c := rest.AddUserAgent(rest.CopyConfig(rc), component+"/leader-election")
	c.Timeout = le.RenewDeadline.Duration
	client, err := kubernetes.NewForConfig(c)
	if err != nil {
		return Config{}, fmt.Errorf("leader-election client for %s: %w", component, err)
	}
	return Config{
		Namespace: le.ResourceNamespace, Name: le.ResourceName, Identity: identity, Client: client,
		LeaseDuration: le.LeaseDuration.Duration, RenewDeadline: le.RenewDeadline.Duration, RetryPeriod: le.RetryPeriod.Duration,
		Log: log,
	}, nil
}

// Run campaigns for the lease until ctx ends. Each time it wins, it calls
// work with a context that ends when the lease is lost or ctx ends; after
// work returns it releases the lease if it still holds it, and campaigns
// again. Run returns nil once ctx ends, or work's error when work returned
// while the lease was held and ctx had not ended: such a run is a failure
// of the component, not a change of leader.
func Run(ctx context.Context, cfg Config, work func(context.Context) error) error {
	client := cfg.Client
	// Events on the Lease ("... became leader") are what upstream leaves
	// for operators; keep them.
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events(cfg.Namespace)})
	recorder := events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: cfg.Name})

	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, cfg.Name, client.CoreV1(), client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: cfg.Identity, EventRecorder: recorder})
	if err != nil {
		return fmt.Errorf("lock for lease %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
	for {
		lost, err := term(ctx, cfg, lock, log, work)
		if err != nil || ctx.Err() != nil {
			return err
		}
		if lost {
			log.Warn("lost the lease: work stopped, campaigning again")
		}
	}
}

// term runs one campaign: it waits for the lease, runs work while it holds
// it, and ends once work has returned and the lease is given up. lost says
// the lease was taken away while work ran.
func term(ctx context.Context, cfg Config, lock resourcelock.Interface, log *slog.Logger, work func(context.Context) error) (lost bool, err error) {
	// The elector's context is not ctx's child: on a stop, work must end
	// first and the lease be released after, so no other box starts while
	// this one's work still runs.
	electCtx, stopElect := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElect()
	leading := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: cfg.LeaseDuration,
		RenewDeadline: cfg.RenewDeadline,
		RetryPeriod:   cfg.RetryPeriod,
		// Released only after work returned (see above), so the next box
		// takes over at once instead of after LeaseDuration.
		ReleaseOnCancel: true,
		Name:            cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			// Upstream runs its work here; kubox only hands the context over,
			// so that work runs in term and term knows when it has returned.
			OnStartedLeading: func(leCtx context.Context) { leading <- leCtx },
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != cfg.Identity {
					log.Info("lease held by another box", "holder", id)
				}
			},
		},
	})
	if err != nil {
		return false, fmt.Errorf("leader election for %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	elected := make(chan struct{})
	go func() {
		defer close(elected)
		le.Run(electCtx)
	}()

	select {
	case <-ctx.Done():
		stopElect()
		<-elected
		return false, nil
	case <-elected:
		// The lease was won and lost before work could start.
		return true, nil
	case leCtx := <-leading:
		began := time.Now()
		log.Info("acquired the lease: starting work")
		workCtx, cancel := context.WithCancel(leCtx)
		defer cancel()
		defer context.AfterFunc(ctx, cancel)()
		err := work(workCtx)
		ended := workCtx.Err() == nil // neither lost nor stopped: work gave up
		stopElect()
		<-elected
		if ended && ctx.Err() == nil {
			if err == nil {
				err = errors.New("stopped on its own")
			}
			return false, err
		}
		lost = ctx.Err() == nil
		if lost && err != nil {
			log.Warn("work ended with an error after the lease was lost", "err", err)
		}
		log.Info("work stopped", "led", time.Since(began).Round(time.Millisecond))
		return lost, nil
	}
}
