package airgap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/fsnotify/fsnotify"
	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	nodeutil "k8s.io/component-helpers/node/util"

	"github.com/kubox/kubox/component"
)

// WatcherConfig configures the server's images-dir component.
type WatcherConfig struct {
	Dir    string // the images dir, e.g. /var/lib/kubox/images
	Record Record
	// AppsDir is where bundles' applications are installed (AppsDir of
	// the data dir), for the manifests applier to apply.
	AppsDir   string
	Address   string // containerd's socket
	Signature SignaturePolicy
	// Settle is how long a file must be left alone before it is read:
	// a file still being copied is not tried on every write. Default 2s.
	Settle time.Duration
	// Rescan is how often the whole dir is looked at again, in case an
	// event was missed. Default 1m.
	Rescan time.Duration
	// NodeName and Client: the watcher begins once this node is Ready,
	// and posts Events on it (and on pods waiting for a bundle's images).
	// Without a Client it begins at once and posts none.
	NodeName string
	Client   kubernetes.Interface
	// ReadyWait bounds the wait for the node to be Ready: the images dir
	// is imported after it anyway. Default 5m.
	ReadyWait time.Duration
	// ReportEvery is how often a long import logs its progress. Default
	// 10s; Events are updated at most every 30s.
	ReportEvery time.Duration
	// TestWriteRate caps what imports write into containerd, in bytes
	// per second (0: no cap). For tests only.
	TestWriteRate int64
	Log           *slog.Logger
}

// Watcher imports the bundles found in the images dir in the background,
// one at a time, once the node is Ready, then watches the dir and imports
// each new or changed bundle once it is complete and valid. It is not on
// the start's path: a bundle however large never holds up the kubelet or
// counts against the start timeout, and one stopped half-way (a stop, a
// kill) resumes at the next start from what containerd already has.
// A bundle whose ID is recorded and whose images are all present is skipped
// after reading only its manifest. A bad file is logged once (one line) and
// left where it is; it is tried again only when it changes.
type Watcher struct {
	cfg    WatcherConfig
	client *containerd.Client
	fsw    *fsnotify.Watcher
	events *importEvents
	// seen is what the last attempt at each file saw and made of it.
	seen map[string]fileState
	// pending are files that changed lately, by when they last did.
	pending map[string]time.Time
	run     component.Goroutine
}

var (
	_ component.Component   = (*Watcher)(nil)
	_ component.Initializer = (*Watcher)(nil)
	_ component.Failer      = (*Watcher)(nil)
)

type fileState struct {
	size  int64
	mtime time.Time
}

// NewWatcher returns the component.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Settle == 0 {
		cfg.Settle = 2 * time.Second
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = time.Minute
	}
	if cfg.ReadyWait == 0 {
		cfg.ReadyWait = 5 * time.Minute
	}
	if cfg.ReportEvery == 0 {
		cfg.ReportEvery = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Watcher{cfg: cfg, seen: map[string]fileState{}, pending: map[string]time.Time{},
		events: &importEvents{client: cfg.Client, node: cfg.NodeName, log: cfg.Log}}
}

func (w *Watcher) Name() string { return "airgap" }

func (w *Watcher) Init(ctx context.Context) error {
	if err := os.MkdirAll(w.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("create images dir: %w", err)
	}
	if w.cfg.Signature.Require && w.cfg.Signature.PublicKey == nil {
		return errors.New("airgap-require-signature is set but no airgap-public-key-file is given: set the trusted public key")
	}
	return nil
}

func (w *Watcher) Start(ctx context.Context) error {
	client, err := containerd.New(w.cfg.Address, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return fmt.Errorf("connect to containerd: %w", err)
	}
	// Connect now: a containerd that does not answer fails the start here.
	if _, err := client.Version(ctx); err != nil {
		client.Close()
		return fmt.Errorf("connect to containerd at %s: %w", w.cfg.Address, err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		client.Close()
		return fmt.Errorf("watch images dir: %w", err)
	}
	// Watch before the first scan, so nothing copied meanwhile is missed.
	if err := fsw.Add(w.cfg.Dir); err != nil {
		client.Close()
		fsw.Close()
		return fmt.Errorf("watch images dir %s: %w", w.cfg.Dir, err)
	}
	w.client, w.fsw = client, fsw
	w.run.Go(ctx, "airgap", w.watch)
	return nil
}

// Failed reports a watch that ended on its own (the directory watch closed).
func (w *Watcher) Failed() <-chan error { return w.run.Failed() }

func (w *Watcher) Stop(ctx context.Context) error {
	err := w.run.Stop(ctx)
	if w.fsw != nil {
		w.fsw.Close()
	}
	if w.client != nil {
		w.client.Close()
	}
	return err
}

func (w *Watcher) watch(ctx context.Context) error {
	w.waitNodeReady(ctx)
	if ctx.Err() != nil {
		return nil
	}
	begin := time.Now()
	st := w.scan(ctx, true)
	w.cfg.Log.Info("images dir checked", "dir", w.cfg.Dir, "bundles", st.bundles, "imported", st.imported,
		"skipped", st.skipped, "failed", st.failed, "took", time.Since(begin).Round(time.Microsecond))

	pending := w.pending
	tick := time.NewTicker(w.cfg.Settle / 4)
	defer tick.Stop()
	rescan := time.NewTicker(w.cfg.Rescan)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod) {
				pending[ev.Name] = time.Now()
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				// A file put back later is a new file, whatever its size and time.
				delete(w.seen, ev.Name)
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: look at everything again.
			w.cfg.Log.Warn("watching the images dir", "err", err)
			w.scan(ctx, false)
		case now := <-tick.C:
			for p, at := range pending {
				if now.Sub(at) >= w.cfg.Settle {
					delete(pending, p)
					w.consider(ctx, p, &scanStats{})
				}
			}
		case <-rescan.C:
			w.scan(ctx, false)
		}
	}
}

type scanStats struct {
	bundles, imported, skipped, failed int
	// What a pass needs to decide on skips, read once per pass, on demand.
	rec    map[digest.Digest]RecordEntry
	images map[string]bool
	loaded bool
}

// waitNodeReady waits for this node to be Ready, or ReadyWait. Why wait:
// on a small box, reading, hashing and writing gigabytes would slow the
// start's own work (etcd, the apiserver, the kubelet registering), while
// pods that need a bundle's images cannot run before the node is Ready
// anyway; and the Node then exists to carry the import's Events.
func (w *Watcher) waitNodeReady(ctx context.Context) {
	if w.cfg.Client == nil {
		return
	}
	begin := time.Now()
	wctx, cancel := context.WithTimeout(ctx, w.cfg.ReadyWait)
	defer cancel()
	err := wait.PollUntilContextCancel(wctx, time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := w.cfg.Client.CoreV1().Nodes().Get(ctx, w.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		_, c := nodeutil.GetNodeCondition(&n.Status, corev1.NodeReady)
		if c == nil || c.Status != corev1.ConditionTrue {
			return false, nil
		}
		w.events.nodeUID = n.UID
		return true, nil
	})
	switch {
	case ctx.Err() != nil:
	case err != nil:
		w.cfg.Log.Warn("node not Ready: importing the images dir anyway", "waited", w.cfg.ReadyWait)
	default:
		w.cfg.Log.Info("node Ready: importing the images dir", "waited", time.Since(begin).Round(time.Millisecond))
	}
}

// known reports whether bundle id was imported and all its images are
// still in containerd: one record read and one image list per pass.
func (w *Watcher) known(ctx context.Context, st *scanStats, id digest.Digest, m *Manifest) bool {
	if !st.loaded {
		st.loaded = true
		rec, err := w.cfg.Record.Load()
		if err != nil {
			w.cfg.Log.Warn("import record unreadable; bundles are imported again", "err", err)
		}
		st.rec = rec
		list, err := w.client.ImageService().List(namespaces.WithNamespace(ctx, Namespace))
		if err != nil {
			w.cfg.Log.Warn("cannot list containerd's images; bundles are imported again", "err", err)
			return false
		}
		st.images = make(map[string]bool, len(list))
		for _, i := range list {
			st.images[i.Name] = true
		}
	}
	if _, ok := st.rec[id]; !ok {
		return false
	}
	for _, im := range m.Images {
		if !st.images[im.Name] {
			return false
		}
	}
	return true
}

func (w *Watcher) scan(ctx context.Context, initial bool) scanStats {
	var st scanStats
	entries, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		w.cfg.Log.Error("cannot read the images dir", "dir", w.cfg.Dir, "err", err)
		return st
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			break
		}
		w.consider(ctx, filepath.Join(w.cfg.Dir, e.Name()), &st)
	}
	return st
}

// ignored are names that are not bundles or are still being written by
// tools that rename when done.
func ignored(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") ||
		strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".partial")
}

// consider imports path if it is a file not tried in its current state.
func (w *Watcher) consider(ctx context.Context, path string, st *scanStats) {
	if ignored(filepath.Base(path)) {
		return
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	now := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if prev, ok := w.seen[path]; ok && prev == now {
		return
	}
	st.bundles++
	if time.Since(fi.ModTime()) < w.cfg.Settle {
		// Still being written, perhaps: look again once it has settled.
		w.pending[path] = fi.ModTime()
		return
	}
	w.seen[path] = now
	res, err := w.importFile(ctx, path, st)
	if errors.Is(err, ErrPartialDiscarded) {
		// The corrupt part is gone; the rest written is kept.
		w.cfg.Log.Warn("bundle import: importing again", "file", path, "err", err)
		res, err = w.importFile(ctx, path, st)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		var written int64
		if res != nil {
			written = res.Transfer.Written
		}
		w.cfg.Log.Info("bundle import stopped: the next one resumes from what was written", "file", path,
			"written", written, "kept_for", LeaseExpiration)
		return
	case err != nil:
		st.failed++
		if errors.Is(err, ErrTruncated) {
			w.cfg.Log.Warn("bundle not imported: incomplete; it is tried again when it changes", "file", path, "err", err)
		} else {
			w.cfg.Log.Error("bundle not imported", "file", path, "err", err)
		}
	case res.Skipped:
		st.skipped++
		w.cfg.Log.Debug("bundle already imported", "file", path, "id", res.ID)
	default:
		st.imported++
		w.cfg.Log.Info("bundle imported", "file", path, "id", res.ID, "images", len(res.Manifest.Images),
			"bytes", res.Bytes, "written", res.Transfer.Written, "skipped", res.Transfer.Skipped(),
			"took", res.Took.Round(time.Millisecond), "MB/s", fmt.Sprintf("%.1f", res.MBps()), "verified_signature", res.Verified)
		if a := res.App; a.App != "" {
			w.cfg.Log.Info("bundle application installed: the manifests applier applies it", "app", a.App,
				"dir", filepath.Join(w.cfg.AppsDir, a.App), "written", a.Written, "unchanged", a.Same, "removed", a.Removed)
		}
	}
	if res == nil || !res.Skipped {
		w.events.end(ctx, filepath.Base(path), res, err)
	}
}

func (w *Watcher) importFile(ctx context.Context, path string, st *scanStats) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	name := filepath.Base(path)
	res, err := Import(ctx, w.client, f, ImportOptions{
		Signature:   w.cfg.Signature,
		Skip:        func(id digest.Digest, m *Manifest) bool { return w.known(ctx, st, id, m) },
		ReportEvery: w.cfg.ReportEvery,
		writeRate:   w.cfg.TestWriteRate,
		AppsDir:     w.cfg.AppsDir,
		Begin: func(m *Manifest, t Transfer) {
			w.cfg.Log.Info("importing bundle", "file", path, "images", len(m.Images), "size", MB(t.Total),
				"already_present", MB(t.Present), "resumed", MB(t.Resumed), "to_write", MB(t.Total-t.Skipped()), "skipped", t.Skipped())
			w.events.begin(ctx, name, m, t)
		},
		Report: func(t Transfer) {
			if t.Unpacking != "" {
				if t.Elapsed >= w.cfg.ReportEvery {
					w.cfg.Log.Info("importing bundle: unpacking", "file", path, "image", t.Unpacking)
				}
				return
			}
			w.cfg.Log.Info("importing bundle", "file", path, "done", fmt.Sprintf("%.0f%%", t.Percent()),
				"read", MB(t.Read), "of", MB(t.Total), "MB/s", fmt.Sprintf("%.1f", t.MBps()), "written", MB(t.Written))
			w.events.progress(ctx, name, t)
		},
		Progress: func(p ImageProgress) {
			w.cfg.Log.Info("image imported", "image", p.Name, "digest", p.Digest, "size", p.Size, "MB/s", fmt.Sprintf("%.1f", p.MBps()))
		},
	})
	if err != nil {
		return res, err
	}
	if !res.Skipped {
		// The next bundle of this pass must see this one's images.
		st.loaded = false
		if err := w.cfg.Record.Add(NewRecordEntry(path, res)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// AlreadyImported tells whether the bundle id is recorded and every image
// it names is still in containerd.
func AlreadyImported(ctx context.Context, client *containerd.Client, rec map[digest.Digest]RecordEntry, id digest.Digest, m *Manifest) bool {
	if _, ok := rec[id]; !ok {
		return false
	}
	names := make([]string, len(m.Images))
	for i, im := range m.Images {
		names[i] = im.Name
	}
	ok, err := ImagesPresent(ctx, client.ImageService(), names)
	return err == nil && ok
}

// NewRecordEntry is the record of a successful import of file.
func NewRecordEntry(file string, res *Result) RecordEntry {
	e := RecordEntry{ID: res.ID, File: file, ImportedAt: time.Now().UTC()}
	for _, im := range res.Manifest.Images {
		e.Images = append(e.Images, im.Name)
	}
	return e
}
