package server

import (
	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/embedded/component"
)

// backupComponent is the last component: it finishes a `kubox restore` once
// the apiserver is up (removes the old box's Node object) and, when
// SnapshotSchedule is set, takes scheduled snapshots with retention.
func (s *Server) backupComponent(pki *bootstrap.PKI, etcdURL string) component.Component {
	c := s.cfg
	dir := c.SnapshotDir
	if dir == "" {
		dir = backup.DefaultDir(c.DataDir)
	}
	key := c.SnapshotKeyFile
	if key == "" {
		key = backup.DefaultKeyFile
	}
	return backup.NewScheduler(backup.SchedulerConfig{
		Schedule: c.SnapshotSchedule, Retention: c.SnapshotRetention, Dir: dir, KeyFile: key,
		Etcd:   backup.EtcdEndpoint{URL: etcdURL, CACert: pki.EtcdServerCACert, Cert: pki.EtcdClientCert, Key: pki.EtcdClientKey},
		PKIDir: pki.Dir, NodeName: c.NodeName, KuboxVersion: c.KuboxVersion,
		DataDir: c.DataDir, Kubeconfig: pki.AdminKubeconfig,
		Log: s.log.With("component", "backup"),
	})
}
