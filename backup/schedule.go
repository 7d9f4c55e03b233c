package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/internal/fsutil"
)

// SchedulerConfig configures the backup component of kubox server.
type SchedulerConfig struct {
	// Schedule is a cron spec (5 fields, or @every 6h, @daily, ...); empty
	// means no scheduled snapshots.
	Schedule string
	// Retention keeps the newest Retention scheduled snapshots; 0 keeps all
	// (kubox server's default is DefaultRetention). Manual snapshots are
	// never pruned by it.
	Retention int
	Dir       string // snapshot dir
	// KeyFile is the backup key file K. Scheduled snapshots need only K.pub
	// (the recipient) and K.sign (the signing key) when Schedule is set;
	// the identity K itself need not be on the box.
	KeyFile string
	// OpenRemote, if set, opens an off-box store that scheduled
	// snapshots go to (see remote.go), with retention there too;
	// KeepLocal keeps a copy in Dir as well.
	OpenRemote func() (Remote, error)
	KeepLocal  bool

	Etcd         EtcdEndpoint
	PKIDir       string
	NodeName     string
	KuboxVersion string

	// DataDir is searched for a RestoreMarkerFile left by `kubox restore`;
	// a snapshot dir on its filesystem must leave its floor free (see
	// diskspace.Reserve).
	DataDir string
	// Kubeconfig is an admin kubeconfig: the component removes the Node of
	// a restored snapshot's old box, and records scheduled snapshots as
	// Events on this node.
	Kubeconfig string
	Log        *slog.Logger
}

// Scheduler is the "backup" component of kubox server (see
// package component): it finishes a restore once the apiserver is up, and
// runs scheduled snapshots with retention. It goes last in the start order.
type Scheduler struct {
	cfg    SchedulerConfig
	log    *slog.Logger
	sched  cron.Schedule
	pub    PublicKeys
	signer *SigningKey
	keyErr error // why no snapshot can be written; every tick fails with it
	client kubernetes.Interface
	remote Remote

	cron   *cron.Cron
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	lastOK   time.Time
	lastErr  error
	runs     int
	failures int
}

var (
	_ component.Component   = (*Scheduler)(nil)
	_ component.Initializer = (*Scheduler)(nil)
)

// NewScheduler returns the component for cfg.
func NewScheduler(cfg SchedulerConfig) *Scheduler {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Scheduler{cfg: cfg, log: log}
}

func (s *Scheduler) Name() string { return "backup" }

// Init checks the schedule and loads the key, so a bad configuration stops
// kubox before anything runs.
func (s *Scheduler) Init(ctx context.Context) error {
	if s.cfg.Schedule == "" {
		return nil
	}
	sched, err := cron.ParseStandard(s.cfg.Schedule)
	if err != nil {
		return fmt.Errorf("--snapshot-schedule %q: %v (use cron syntax such as \"0 */6 * * *\" or \"@every 6h\")", s.cfg.Schedule, err)
	}
	if s.cfg.Retention < 0 {
		return fmt.Errorf("--snapshot-retention %d: must be 0 (keep all) or more", s.cfg.Retention)
	}
	pub, signer, err := LoadWriterKeys(s.cfg.KeyFile)
	if err != nil {
		// A key made before snapshots were signed (the identity is there,
		// the signing key not yet) must not keep an upgraded box from
		// starting: every tick fails loudly until the key is completed.
		if _, idErr := os.Stat(s.cfg.KeyFile); !errors.Is(err, fs.ErrNotExist) || idErr != nil {
			return fmt.Errorf("--snapshot-schedule is set but: %w", err)
		}
		s.keyErr = fmt.Errorf("scheduled snapshot: %w", err)
		s.log.Error("SCHEDULED SNAPSHOTS WILL FAIL: the backup key has no signing key yet; run \"kubox snapshot key create\" to add it", "err", err)
	}
	if err := fsutil.EnsureDir(s.cfg.Dir, modeDir); err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if s.cfg.OpenRemote != nil {
		if s.remote, err = s.cfg.OpenRemote(); err != nil {
			return fmt.Errorf("--snapshot-schedule is set but: %w", err)
		}
	}
	s.sched, s.pub, s.signer = sched, pub, signer
	ensureMetrics()
	return nil
}

func (s *Scheduler) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	if s.cfg.Kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
		if err != nil {
			return fmt.Errorf("load %s: %w", s.cfg.Kubeconfig, err)
		}
		rc.UserAgent = "kubox-backup"
		if s.client, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("client from %s: %w", s.cfg.Kubeconfig, err)
		}
	}
	if s.cfg.DataDir != "" {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.finishRestore(ctx)
		}()
	}
	if s.sched == nil {
		return nil
	}
	s.cron = cron.New(cron.WithChain(cron.SkipIfStillRunning(cronLogger{s.log})), cron.WithLogger(cronLogger{s.log}))
	s.cron.Schedule(s.sched, cron.FuncJob(func() { s.runScheduled(ctx) }))
	s.cron.Start()
	s.log.Info("scheduled snapshots on", "schedule", s.cfg.Schedule, "retention", s.cfg.Retention, "dir", s.cfg.Dir, "remote", remoteLocation(s.remote),
		"next", s.sched.Next(time.Now()).Format(time.RFC3339))
	return nil
}

// Stop cancels a snapshot in progress (its temp file is removed) and waits
// for it to end.
func (s *Scheduler) Stop(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() {
		if s.cron != nil {
			<-s.cron.Stop().Done()
		}
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("snapshot still running: %w", ctx.Err())
	}
}

// runScheduled is one tick of the schedule: a scheduled snapshot, then
// retention. A failure is logged loudly and recorded as a Warning Event; the
// next tick simply tries again.
func (s *Scheduler) runScheduled(ctx context.Context) {
	begin := time.Now()
	var res SaveResult
	err := s.keyErr
	var keepFree int64
	if err == nil && s.cfg.DataDir != "" {
		keepFree, err = diskspace.Reserve(s.cfg.DataDir, s.cfg.Dir)
	}
	if err == nil {
		res, err = s.save(ctx, keepFree)
	}
	s.mu.Lock()
	s.runs++
	if err != nil {
		s.failures++
		s.lastErr = err
	} else {
		s.lastOK, s.lastErr = time.Now(), nil
	}
	failures := s.failures
	s.mu.Unlock()
	snapshotDuration.Observe(time.Since(begin).Seconds())
	if err != nil {
		snapshotsTotal.WithLabelValues("failure").Inc()
	} else {
		snapshotsTotal.WithLabelValues("success").Inc()
		snapshotLastSuccess.Set(float64(time.Now().Unix()))
		snapshotLastSize.Set(float64(res.Size))
	}
	if err != nil {
		if ctx.Err() != nil {
			s.log.Warn("scheduled snapshot cancelled: kubox is stopping", "err", err)
			return
		}
		s.log.Error("SCHEDULED SNAPSHOT FAILED; retrying at the next tick", "err", err,
			"took", time.Since(begin).Round(time.Millisecond), "failures", failures,
			"next", s.sched.Next(time.Now()).Format(time.RFC3339))
		s.event(ctx, corev1.EventTypeWarning, "SnapshotFailed", "scheduled snapshot failed: "+err.Error())
		return
	}
	s.log.Info("scheduled snapshot saved", "path", res.Path, "size", res.Size,
		"db", res.Header.EtcdDBSize, "revision", res.Header.EtcdRevision, "took", res.Duration.Round(time.Millisecond))
	s.event(ctx, corev1.EventTypeNormal, "SnapshotSaved", fmt.Sprintf("scheduled snapshot %s (%s, etcd revision %d) in %s",
		res.Path, HumanBytes(res.Size), res.Header.EtcdRevision, res.Duration.Round(time.Millisecond)))
	if s.cfg.Retention > 0 {
		removed, err := Prune(s.cfg.Dir, s.cfg.Retention, true)
		for _, p := range removed {
			s.log.Info("retention removed snapshot", "path", p, "keep", s.cfg.Retention)
		}
		if err != nil {
			s.log.Error("SNAPSHOT RETENTION FAILED", "err", err)
		}
		s.pruneRemote(ctx, res)
	}
}

// event records a Kubernetes Event on this node; failures only log.
func (s *Scheduler) event(ctx context.Context, typ, reason, msg string) {
	if s.client == nil {
		return
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "kubox-snapshot-", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: s.cfg.NodeName},
		Reason:         reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "kubox-backup", Host: s.cfg.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if n, err := s.client.CoreV1().Nodes().Get(ctx, s.cfg.NodeName, metav1.GetOptions{}); err == nil {
		ev.InvolvedObject.UID = n.UID
	}
	if _, err := s.client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		s.log.Warn("could not record snapshot event", "err", err)
	}
}

// finishRestore acts on the marker `kubox restore` left: if the snapshot
// came from a box with another node name, that Node object is deleted so
// the cluster does not wait for a dead node (its pods are then garbage
// collected and rescheduled here). The marker is kept for the next start if
// this fails.
func (s *Scheduler) finishRestore(ctx context.Context) {
	m, err := ReadRestoreMarker(s.cfg.DataDir)
	if err != nil {
		s.log.Error("restore marker unreadable; the old Node object may need removing by hand", "err", err)
		return
	}
	if m == nil {
		return
	}
	if m.SnapshotNode != "" && m.SnapshotNode != s.cfg.NodeName {
		if s.client == nil {
			s.log.Error("restored from another node but no client to remove its Node object", "old_node", m.SnapshotNode)
			return
		}
		var lastErr error
		attempt, gaveUp := 0, errors.New("gave up")
		err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.client.CoreV1().Nodes().Delete(dctx, m.SnapshotNode, metav1.DeleteOptions{})
			cancel()
			if err == nil || apierrors.IsNotFound(err) {
				return true, nil
			}
			lastErr = err
			if attempt >= 30 {
				return false, gaveUp
			}
			attempt++
			return false, nil
		})
		if err != nil {
			s.log.Error("restore: could not remove the old Node object; remove it with kubectl delete node", "old_node", m.SnapshotNode, "err", errors.Join(lastErr, ctx.Err()))
			return
		}
		s.log.Info("restore: removed the Node object of the snapshot's box", "old_node", m.SnapshotNode, "node", s.cfg.NodeName)
	}
	if err := FinishRestoreMarker(s.cfg.DataDir); err != nil {
		s.log.Error("restore: could not mark the restore finished", "err", err)
		return
	}
	s.log.Info("restore finished", "snapshot", m.Snapshot, "snapshot_node", m.SnapshotNode, "revision", m.EtcdRevision)
}

// cronLogger sends robfig/cron's messages to slog.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
