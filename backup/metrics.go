package backup

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Scheduled-snapshot metrics, registered in component-base's legacy
// registry, which the embedded kube-apiserver serves on /metrics
// (kubectl get --raw /metrics | grep kubox_snapshot).
var (
	snapshotsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "scheduled_total",
		Help:           "Scheduled snapshots taken, by result (success or failure).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	snapshotDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "duration_seconds",
		Help:           "Duration of scheduled snapshots, successful or not.",
		Buckets:        metrics.ExponentialBuckets(0.1, 2, 14),
		StabilityLevel: metrics.ALPHA,
	})
	snapshotLastSuccess = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "last_success_timestamp_seconds",
		Help:           "Unix time of the last successful scheduled snapshot.",
		StabilityLevel: metrics.ALPHA,
	})
	snapshotLastSize = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "snapshot", Name: "last_size_bytes",
		Help:           "File size of the last successful scheduled snapshot.",
		StabilityLevel: metrics.ALPHA,
	})
	registerMetrics sync.Once
)

func ensureMetrics() {
	registerMetrics.Do(func() {
		legacyregistry.MustRegister(snapshotsTotal, snapshotDuration, snapshotLastSuccess, snapshotLastSize)
	})
}
