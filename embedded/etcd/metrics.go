package etcd

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// The space keeper's figures of this box's member, in component-base's
// legacy registry: kubox's metrics listener and the apiserver's /metrics
// serve them.
var (
	dbSize = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "etcd", Name: "db_size_bytes",
		Help:           "Size of this box's etcd database, which etcd checks against its quota (freed pages count until a defragmentation).",
		StabilityLevel: metrics.ALPHA,
	})
	dbInUse = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "etcd", Name: "db_size_in_use_bytes",
		Help:           "Part of this box's etcd database in use; the rest is what a defragmentation frees.",
		StabilityLevel: metrics.ALPHA,
	})
	dbQuota = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "etcd", Name: "quota_bytes",
		Help:           "etcd's database quota (etcd-quota-bytes); at it, etcd raises NOSPACE and refuses writes.",
		StabilityLevel: metrics.ALPHA,
	})
	nospaceAlarm = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "kubox", Subsystem: "etcd", Name: "nospace_alarm",
		Help:           "1 while this box's etcd member has the NOSPACE alarm raised (writes refused), else 0.",
		StabilityLevel: metrics.ALPHA,
	})
	registerMetrics sync.Once
)

func registerSpaceMetrics() {
	registerMetrics.Do(func() { legacyregistry.MustRegister(dbSize, dbInUse, dbQuota, nospaceAlarm) })
}
