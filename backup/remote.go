package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Remote is an off-box snapshot store (package backup/s3 is one): scheduled
// snapshots stream into it, or are copied there when a local copy is kept.
type Remote interface {
	// Location says where this box's snapshots go (s3://bucket/prefix/node/).
	Location() string
	// Create starts a streaming upload (an OpenSink).
	Create(ctx context.Context, h Header, headerLen int) (Sink, error)
	// Upload copies a finished local snapshot file; it does nothing when
	// the copy is there already.
	Upload(ctx context.Context, path string) (string, error)
	// Prune keeps the newest keep scheduled snapshots of this box of
	// cluster clusterID and removes the older ones.
	Prune(ctx context.Context, keep int, clusterID string) ([]string, error)
}

// uploadBackoff spaces the retries of a failed upload (at most Steps
// attempts); they stop in any case before the next tick of the schedule.
var uploadBackoff = wait.Backoff{Duration: 5 * time.Second, Factor: 3, Steps: 4, Cap: 5 * time.Minute}

var (
	uploadsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "upload_total",
		Help:           "Scheduled snapshot uploads to the off-box store, by result (success, or failure once the retries gave up).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	uploadRetries = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "upload_retries_total",
		Help:           "Failed attempts to upload a scheduled snapshot that were retried.",
		StabilityLevel: metrics.ALPHA,
	})
	uploadLastSuccess = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "upload_last_success_timestamp_seconds",
		Help:           "Unix time of the last successful upload of a scheduled snapshot.",
		StabilityLevel: metrics.ALPHA,
	})
	registerUploadMetrics sync.Once
)

func ensureUploadMetrics() {
	registerUploadMetrics.Do(func() {
		legacyregistry.MustRegister(uploadsTotal, uploadRetries, uploadLastSuccess)
	})
}

// save takes one scheduled snapshot: into the snapshot dir, the remote
// store, or both (the local file first, then copied). Uploads that fail are
// retried with backoff until just before the next tick, then reported (log,
// Warning Event, metric); a local copy, if kept, stays either way.
func (s *Scheduler) save(ctx context.Context, keepFree int64) (SaveResult, error) {
	opts := SaveOptions{
		Etcd: s.cfg.Etcd, PKIDir: s.cfg.PKIDir, Dir: s.cfg.Dir, Recipient: s.pub.Recipient, Signer: s.signer,
		Scheduled: true, NodeName: s.cfg.NodeName, KuboxVersion: s.cfg.KuboxVersion, KeepFree: keepFree,
	}
	r := s.remote
	if r == nil {
		return Save(ctx, opts)
	}
	ensureUploadMetrics()
	var res SaveResult
	if s.cfg.KeepLocal {
		var err error
		if res, err = Save(ctx, opts); err != nil {
			return res, err
		}
	} else {
		opts.Sink = r.Create
	}
	// Retries start only while they end before the next tick, so a
	// failing upload never delays it.
	next := s.sched.Next(time.Now())
	backoff := uploadBackoff
	attempt := 0
	var err error
	for {
		attempt++
		if s.cfg.KeepLocal {
			var url string
			if url, err = r.Upload(ctx, res.Path); err == nil {
				s.log.Info("scheduled snapshot uploaded", "path", res.Path, "url", url)
			}
		} else {
			res, err = Save(ctx, opts)
		}
		if err == nil || ctx.Err() != nil || backoff.Steps <= 1 {
			break
		}
		d := backoff.Step()
		if time.Now().Add(d).After(next) {
			break
		}
		uploadRetries.Inc()
		s.log.Warn("snapshot upload failed; retrying", "in", d, "attempt", attempt, "to", r.Location(), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err == nil {
		uploadsTotal.WithLabelValues("success").Inc()
		uploadLastSuccess.Set(float64(time.Now().Unix()))
		return res, nil
	}
	if ctx.Err() != nil {
		return res, err
	}
	uploadsTotal.WithLabelValues("failure").Inc()
	uploadErr := fmt.Errorf("upload to %s failed after %d attempts: %w", r.Location(), attempt, err)
	if !s.cfg.KeepLocal {
		return res, uploadErr
	}
	// The snapshot itself is saved; only its off-box copy is missing.
	s.log.Error("SNAPSHOT UPLOAD FAILED; the local copy is kept, the next tick tries again", "path", res.Path, "err", uploadErr)
	s.event(ctx, corev1.EventTypeWarning, "SnapshotUploadFailed", "scheduled snapshot "+res.Path+": "+uploadErr.Error())
	return res, nil
}

// pruneRemote applies retention to this box's snapshots in the remote
// store, counting only those of the cluster just saved.
func (s *Scheduler) pruneRemote(ctx context.Context, res SaveResult) {
	if s.remote == nil || s.cfg.Retention <= 0 {
		return
	}
	removed, err := s.remote.Prune(ctx, s.cfg.Retention, res.Header.ClusterID)
	for _, u := range removed {
		s.log.Info("retention removed snapshot", "url", u, "keep", s.cfg.Retention)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("REMOTE SNAPSHOT RETENTION FAILED", "err", err)
	}
}

func remoteLocation(r Remote) string {
	if r == nil {
		return "none"
	}
	return r.Location()
}
