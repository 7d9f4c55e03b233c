package backup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubox/kubox/internal/diskspace"
	"github.com/kubox/kubox/internal/fsutil"
)

// EtcdEndpoint says how to reach a kubox node's etcd with mutual TLS.
type EtcdEndpoint struct {
	URL    string // https://127.0.0.1:2379
	CACert string // CA of the etcd serving cert (<data-dir>/pki/etcd/server-ca.crt)
	Cert   string // client cert signed by that CA (<data-dir>/pki/etcd/client.crt)
	Key    string // its key
}

// SaveOptions says what Save snapshots, and where to.
type SaveOptions struct {
	Etcd   EtcdEndpoint
	PKIDir string // every regular file under it goes into the snapshot
	Dir    string // snapshot directory
	// Sink, if set, is where the snapshot goes instead of Dir (an object
	// store's upload; see WriteTo).
	Sink OpenSink

	// Recipient (age1...) is what snapshots are encrypted to; Key may be
	// given instead (see WriteOptions).
	Recipient         string
	Key               *Key
	InsecurePlaintext bool
	// Signer signs the snapshot; required unless InsecurePlaintext.
	Signer *SigningKey

	Name      string // "" = "manual" or "scheduled"
	Scheduled bool
	// NodeName is recorded in the header; "" means the name of the etcd
	// member that answers (kubox names it after its node), which is what a
	// restore needs to find the old box's Node object.
	NodeName     string
	KuboxVersion string

	// Progress, if set, is called with what Save is doing: once per step,
	// and about once a second while the etcd db streams.
	Progress func(Progress)
	// KeepFree is what must stay free in Dir's filesystem after the
	// snapshot (see diskspace.Reserve): Save refuses to start otherwise.
	KeepFree int64
}

// Progress is one report of a running Save.
type Progress struct {
	Step     string // "connect", "stream", "done"
	Message  string // one human line
	DBBytes  int64  // etcd db bytes streamed so far
	Revision int64  // etcd revision of the snapshot, once known
}

// SaveResult is what Save made.
type SaveResult struct {
	Entry
	Duration time.Duration // from connecting to the renamed, fsynced file
	// StreamDuration is the time from the first to the last db byte.
	StreamDuration time.Duration
	EtcdVersion    string // version of the etcd that made the snapshot
}

// DBRate is the etcd db bytes saved per second of the whole save.
func (r SaveResult) DBRate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Header.EtcdDBSize) / r.Duration.Seconds()
}

// ConnectEtcd returns an etcd client for ep. Close it when done.
// With no certificates at all (tests, an http:// URL) it connects without TLS.
func ConnectEtcd(ep EtcdEndpoint) (*clientv3.Client, error) {
	var tlsCfg *tls.Config
	if ep.CACert != "" || ep.Cert != "" || ep.Key != "" {
		tlsInfo := transport.TLSInfo{CertFile: ep.Cert, KeyFile: ep.Key, TrustedCAFile: ep.CACert}
		var err error
		if tlsCfg, err = tlsInfo.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd client TLS config: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{ep.URL},
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// The snapshot stream's messages are small (32 KiB), but be generous.
		MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", ep.URL, err)
	}
	return cli, nil
}

// Save takes a snapshot of the etcd behind opts.Etcd and writes it, with the
// PKI files under opts.PKIDir, to a new encrypted snapshot file in opts.Dir
// (see Write). The etcd stream goes straight into the encrypted file: no
// plaintext byte reaches the disk, and memory stays bounded.
func Save(ctx context.Context, opts SaveOptions) (SaveResult, error) {
	begin := time.Now()
	progress := func(p Progress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	// Check what can fail cheaply before asking etcd for anything.
	if opts.Key == nil && opts.Recipient == "" && !opts.InsecurePlaintext {
		return SaveResult{}, fmt.Errorf("save snapshot: %w: give a key file (create one with \"kubox snapshot key create\"), or --insecure-plaintext", ErrKeyRequired)
	}
	if opts.Signer == nil && !opts.InsecurePlaintext {
		return SaveResult{}, fmt.Errorf("save snapshot: %w: no signing key (\"kubox snapshot key create\" adds one)", ErrKeyRequired)
	}
	pki, err := PKIFilesFromDir(opts.PKIDir)
	if err != nil {
		return SaveResult{}, fmt.Errorf("save snapshot: %w", err)
	}
	// Certificates and keys that bootstrap retired (<name>.old-<time>) are
	// of no use to a restore: leave them out.
	for name := range pki {
		if strings.Contains(path.Base(name), ".old-") {
			delete(pki, name)
		}
	}
	progress(Progress{Step: "connect", Message: "connecting to etcd at " + opts.Etcd.URL})
	cli, err := ConnectEtcd(opts.Etcd)
	if err != nil {
		return SaveResult{}, fmt.Errorf("save snapshot: %w", err)
	}
	defer cli.Close()

	// A stuck etcd must not hang a save forever; the stream itself may take
	// long on a big db, so the bound applies to getting the stream going.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	status, err := cli.Status(startCtx, opts.Etcd.URL)
	startCancel()
	if err != nil {
		return SaveResult{}, fmt.Errorf("save snapshot: etcd at %s: %w (is kubox server running?)", opts.Etcd.URL, err)
	}
	// A snapshot streamed off the box needs no room on it.
	if opts.Sink == nil {
		if err := checkSpace(opts.Dir, status.DbSize, pki, opts.KeepFree); err != nil {
			return SaveResult{}, fmt.Errorf("save snapshot: %w", err)
		}
	}
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return SaveResult{}, fmt.Errorf("save snapshot: start etcd snapshot: %w", err)
	}
	defer resp.Snapshot.Close()
	node := opts.NodeName
	if node == "" {
		mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
		members, err := cli.MemberList(mctx)
		mcancel()
		if err != nil {
			return SaveResult{}, fmt.Errorf("save snapshot: etcd member list: %w", err)
		}
		for _, m := range members.Members {
			if m.ID == status.Header.GetMemberId() {
				node = m.Name
			}
		}
		if node == "" {
			return SaveResult{}, errors.New("save snapshot: cannot tell the node name from etcd: give one")
		}
	}
	rev := status.Header.GetRevision()
	if resp.Header != nil && resp.Header.Revision != 0 {
		rev = resp.Header.Revision
	}
	clusterID := strconv.FormatUint(status.Header.GetClusterId(), 16)
	progress(Progress{Step: "stream", Message: fmt.Sprintf("streaming etcd snapshot (cluster %s, revision %d, db about %s)", clusterID, rev, HumanBytes(status.DbSize)), Revision: rev})

	cr := &progressReader{r: resp.Snapshot}
	stop := make(chan struct{})
	reporterDone := make(chan struct{})
	go func() {
		defer close(reporterDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n := cr.n.Load()
				progress(Progress{Step: "stream", Message: fmt.Sprintf("streamed %s", HumanBytes(n)), DBBytes: n, Revision: rev})
			}
		}
	}()
	wopts := WriteOptions{
		Header: Header{
			ClusterID:    clusterID,
			NodeName:     node,
			EtcdRevision: rev,
			KuboxVersion: opts.KuboxVersion,
			Name:         opts.Name,
			Scheduled:    opts.Scheduled,
		},
		PKIFiles:          pki,
		Recipient:         opts.Recipient,
		Key:               opts.Key,
		InsecurePlaintext: opts.InsecurePlaintext,
		Signer:            opts.Signer,
	}
	var entry Entry
	if opts.Sink != nil {
		entry, err = WriteTo(ctx, cr, wopts, opts.Sink)
	} else {
		entry, err = Write(ctx, opts.Dir, cr, wopts)
	}
	close(stop)
	<-reporterDone
	if err != nil {
		return SaveResult{}, fmt.Errorf("save snapshot: %w", err)
	}
	res := SaveResult{Entry: entry, Duration: time.Since(begin), EtcdVersion: resp.Version}
	if f, l := cr.first.Load(), cr.last.Load(); f != 0 && l >= f {
		res.StreamDuration = time.Duration(l - f)
	}
	progress(Progress{Step: "done", Message: "wrote " + entry.Path, DBBytes: entry.Header.EtcdDBSize, Revision: rev})
	return res, nil
}

// progressReader counts bytes and notes when the first and last arrived.
type progressReader struct {
	r           io.Reader
	n           atomic.Int64
	first, last atomic.Int64 // unix nanoseconds
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		now := time.Now().UnixNano()
		p.first.CompareAndSwap(0, now)
		p.last.Store(now)
		p.n.Add(int64(n))
	}
	return n, err
}

// HumanBytes renders a byte count with a binary unit ("12.3 MiB").
func HumanBytes(n int64) string { return diskspace.Human(n) }

// Remove deletes the snapshot called name in dir: a file name (with or
// without the extension) as `kubox snapshot ls` shows it. It refuses names
// with a path in them and files that are not snapshots.
func Remove(dir, name string) (string, error) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("remove snapshot %q: give a file name from \"kubox snapshot ls\", not a path", name)
	}
	file := name
	if !strings.HasSuffix(file, Extension) {
		file += Extension
	}
	p := filepath.Join(dir, file)
	if _, _, err := ReadHeader(p); err != nil && !errors.Is(err, ErrCorrupted) && !errors.Is(err, ErrNewerVersion) {
		return "", fmt.Errorf("remove snapshot: %w", err)
	}
	if err := os.Remove(p); err != nil {
		return "", fmt.Errorf("remove snapshot: %w", err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return p, fmt.Errorf("remove snapshot: %w", err)
	}
	return p, nil
}

// DefaultKeyFile is where kubox looks for the backup key unless told.
const DefaultKeyFile = "/etc/kubox/backup.key"

// DefaultDir is the snapshot dir of a data dir unless told otherwise.
func DefaultDir(dataDir string) string { return filepath.Join(dataDir, "snapshots") }
