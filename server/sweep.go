package server

import (
	"path/filepath"

	"github.com/kubox/kubox/backup"
	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/internal/fsutil"
)

// snapshotDir is where snapshots go: SnapshotDir, or <DataDir>/snapshots.
func (c *Config) snapshotDir() string {
	if c.SnapshotDir != "" {
		return c.SnapshotDir
	}
	return backup.DefaultDir(c.DataDir)
}

// tempSweep is one dir sweepTemp cleans, and which temp files there are
// kubox's own.
type tempSweep struct {
	dir       string
	recursive bool
	match     func(name string) bool
}

// tempSweeps lists where kubox writes temp-then-rename files: the dirs only
// kubox writes (the data dir's own files, PKI, kubeconfigs, agent and DNS
// config, runtime binaries, the air-gap record) and the snapshot dir. Dirs
// that hold others' files (etcd, containerd, the kubelet's pods, the images
// dir) are left alone, and so are staging dirs (not files).
func tempSweeps(c *Config, p Paths) []tempSweep {
	own := func(dir string) tempSweep { return tempSweep{dir: dir, recursive: true, match: fsutil.IsTempName} }
	return []tempSweep{
		{dir: c.DataDir, match: fsutil.IsTempName},
		own(p.PKI), own(p.Kubeconfigs), own(filepath.Dir(p.KubeletConfig)), own(filepath.Dir(p.Corefile)),
		own(p.Bin), own(filepath.Join(c.DataDir, "airgap")),
		{dir: c.snapshotDir(), match: backup.IsTempName},
	}
}

// sweepTemp removes the temp files a killed kubox (or `kubox snapshot
// save`) left: only names of kubox's own patterns, older than this
// process, and not locked by a writer still running. It logs one line when
// it removed something; failures only warn.
func (s *Server) sweepTemp() {
	var total fsutil.Swept
	for _, sw := range tempSweeps(&s.cfg, s.paths) {
		n, err := fsutil.SweepTemp(sw.dir, sw.recursive, sw.match, s.created)
		if err != nil {
			s.log.Warn("could not sweep every stale temp file", "dir", sw.dir, "err", err)
		}
		total.Files += n.Files
		total.Bytes += n.Bytes
	}
	if total.Files > 0 {
		s.log.Info("swept stale temp files of an earlier run", "files", total.Files, "bytes", total.Bytes,
			"size", diskspace.Human(total.Bytes))
	}
}
