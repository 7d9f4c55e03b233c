// Package manifests applies the files of the manifests dir to the cluster
// with server-side apply, at start and whenever a file changes, and
// deletes the objects of a file that was removed, or that a file no longer
// holds. What each file applied is kept in the cluster, in one ConfigMap
// per file in kube-system (see State), so a restarted box and every other
// box of the cluster know what to delete, and `kubox manifests ls` reads
// it while the server runs.
//
// A file's identity is its name: every box applies the files in its own
// dir, and two boxes holding the same file are one file with two holders.
// Identical content is a no-op apply; different content is last writer
// wins, and a box re-applies its copy only when that copy changes, when it
// starts, or when the box whose copy was applied last let go of the file:
// boxes never undo each other in a loop. The objects go when the last
// holder removes the file.
//
// The applications that air-gap bundles install (package airgap) are
// files too, named <application>/<file>, read from the apps dir: the same
// apply, the same deletes, the same state.
package manifests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/kubox/kubox/component"
)

// Config is one box's manifests applier.
type Config struct {
	// Dir is the manifests dir; a missing dir holds no files.
	Dir string
	// AppsDir, when set, holds applications installed from air-gap
	// bundles, one directory each (see airgap.InstallApp): file F of
	// application A is the file "A/F", applied like a file of Dir. A
	// missing dir holds none.
	AppsDir  string
	NodeName string
	// Kubeconfig is the admin kubeconfig the applier acts with.
	Kubeconfig string
	Log        *slog.Logger
	// Interval is how often the dir is looked at (0 = 1 s); Resync how
	// often the cluster's state of every file is read again and failed
	// applies are retried (0 = 10 s).
	Interval, Resync time.Duration
	// KindWait bounds how long objects of a kind the API does not serve
	// yet (a CR after its CRD) are retried within one apply (0 = 20 s).
	KindWait time.Duration
}

// Applier is the component.
type Applier struct {
	cfg   Config
	run   component.Goroutine
	first chan struct{} // closed after the start-time pass over the dir
}

// The loop ends only when stopped (failures are recorded and retried).
var (
	_ component.Component   = (*Applier)(nil)
	_ component.Initializer = (*Applier)(nil)
	_ component.Readier     = (*Applier)(nil)
)

// New returns the applier for cfg.
func New(cfg Config) *Applier {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.KindWait == 0 {
		cfg.KindWait = 20 * time.Second
	}
	return &Applier{cfg: cfg, first: make(chan struct{})}
}

func (a *Applier) Name() string                   { return "manifests" }
func (a *Applier) Stop(ctx context.Context) error { return a.run.Stop(ctx) }

// Init checks the dir's path; the dir itself may not exist (yet).
func (a *Applier) Init(context.Context) error {
	if !filepath.IsAbs(a.cfg.Dir) {
		return fmt.Errorf("manifests dir %q: must be an absolute path", a.cfg.Dir)
	}
	return nil
}

// Ready waits for the start-time pass: every file there was tried once.
func (a *Applier) Ready(ctx context.Context) error {
	select {
	case <-a.first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("manifests: the files of %s were not applied yet: %w", a.cfg.Dir, ctx.Err())
	}
}

// Start builds the clients and starts the loop.
func (a *Applier) Start(ctx context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("manifests: load %s: %w", a.cfg.Kubeconfig, err)
	}
	rc.UserAgent = "kubox-manifests"
	// client-go's default of 5 requests a second makes a file of 100
	// objects take 20 s; the apiserver is local and kubox's own.
	rc.QPS, rc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("manifests: client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("manifests: dynamic client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return fmt.Errorf("manifests: discovery client: %w", err)
	}
	w := &worker{
		cfg: a.cfg, client: client, dyn: dyn,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)),
		seen:   map[string]fileStat{}, done: map[string]outcome{}, held: map[string]bool{},
	}
	a.run.Go(ctx, "manifests", func(ctx context.Context) error {
		events := record.NewBroadcaster(record.WithContext(ctx))
		defer events.Shutdown()
		events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		w.recorder = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubox-manifests", Host: a.cfg.NodeName})
		w.loop(ctx, a.first)
		return nil
	})
	return nil
}

// worker is what one run of the applier holds.
type worker struct {
	cfg      Config
	client   kubernetes.Interface
	dyn      dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	recorder record.EventRecorder
	// seen is each file's size and time when last read; done what this
	// box last made of each file's content; held the files this box holds.
	seen map[string]fileStat
	done map[string]outcome
	held map[string]bool
}

type fileStat struct {
	size  int64
	mtime time.Time
}

type outcome struct {
	hash   string
	retry  bool   // an apply failed: try again at the next resync
	broken bool   // the content does not parse: nothing to do until it changes
	err    string // last error logged, so it is logged once
}

func (w *worker) loop(ctx context.Context, first chan struct{}) {
	// inotify only wakes the loop early; the poll alone is enough (an
	// editor's rename, a dir made later, a missed event are all seen by it).
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.cfg.Log.Warn("no inotify for the manifests dir; polling it every "+w.cfg.Interval.String(), "err", err)
		fsw = nil
	} else {
		defer fsw.Close()
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	// Added again on every poll: a dir made later, or removed and made
	// again, is watched from then on (adding a watched dir again is one
	// cheap system call).
	watch := func() {
		if fsw != nil && fsw.Add(w.cfg.Dir) == nil {
			events, errs = fsw.Events, fsw.Errors
		}
		if fsw == nil || w.cfg.AppsDir == "" {
			return
		}
		for _, d := range append(w.appDirs(), w.cfg.AppsDir) {
			if fsw.Add(d) == nil {
				events, errs = fsw.Events, fsw.Errors
			}
		}
	}
	watch()
	w.pass(ctx, true)
	close(first)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	lastFull := time.Now()
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// Let a burst of writes settle before reading.
			soon.Reset(100 * time.Millisecond)
		case _, ok := <-errs:
			// An overflow lost events: the next poll sees everything.
			if !ok {
				errs = nil
			}
		case <-soon.C:
			w.pass(ctx, false)
		case now := <-tick.C:
			watch()
			full := now.Sub(lastFull) >= w.cfg.Resync
			if full {
				lastFull = now
			}
			w.pass(ctx, full)
		}
	}
}

// pass applies what changed in the dir; a full pass also reads the
// cluster's state of every file, retries failed applies and re-applies a
// file whose last applier let go of it.
func (w *worker) pass(ctx context.Context, full bool) {
	files, err := w.scan()
	if err != nil {
		w.logOnce("", err.Error(), func() {
			w.cfg.Log.Error("cannot read the manifests dir; nothing is applied or deleted", "dir", w.cfg.Dir, "err", err)
		})
		return
	}
	w.done[""] = outcome{}
	var states map[string]State
	if full {
		if states, err = w.states(ctx); err != nil {
			w.cfg.Log.Warn("reading the manifests' state", "err", err)
			states = nil
		}
		for name, st := range states {
			if _, mine := st.Boxes[w.cfg.NodeName]; mine {
				w.held[name] = true
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if ctx.Err() != nil {
			return
		}
		fi := files[name]
		if !full && w.seen[name] == fi {
			continue
		}
		data, err := os.ReadFile(w.path(name))
		if err != nil {
			w.cfg.Log.Warn("cannot read a manifest", "file", name, "err", err)
			continue
		}
		w.seen[name] = fi
		h := Hash(data)
		last, tried := w.done[name]
		apply := !tried || last.hash != h || (full && last.retry)
		if full && states != nil && !apply && !last.broken {
			st, ok := states[name]
			apply = reapply(st, ok, w.cfg.NodeName, h)
		}
		if apply {
			w.applyFile(ctx, name, data, h)
		}
	}
	for name := range w.held {
		if _, ok := files[name]; !ok && ctx.Err() == nil {
			w.release(ctx, name, true)
		}
	}
	for name, st := range states {
		if len(st.Boxes) == 0 && ctx.Err() == nil {
			w.release(ctx, name, false) // a removal that could not finish
		}
	}
}

// reapply says whether a box holding a file of content hash h applies it
// again although its copy did not change, given the cluster's state of the
// file (ok: there is one): when the cluster lost this box's record (or the
// whole state), or when the copy applied last was that of a box that let
// go of the file. Another holder's different copy that was applied last
// stays: last writer wins, and boxes do not undo each other.
func reapply(st State, ok bool, box, h string) bool {
	if !ok {
		return true
	}
	if _, mine := st.Boxes[box]; !mine {
		return true
	}
	if st.AppliedBy == "" || st.SHA256 == h {
		return false
	}
	_, applierHolds := st.Boxes[st.AppliedBy]
	return !applierHolds
}

// scan lists the manifests of the dir and of the applications in the apps
// dir; a missing dir has none.
func (w *worker) scan() (map[string]fileStat, error) {
	files := map[string]fileStat{}
	if err := scanDir(w.cfg.Dir, "", files); err != nil {
		return nil, err
	}
	if w.cfg.AppsDir == "" {
		return files, nil
	}
	entries, err := os.ReadDir(w.cfg.AppsDir)
	if errors.Is(err, os.ErrNotExist) {
		return files, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			if err := scanDir(filepath.Join(w.cfg.AppsDir, e.Name()), e.Name()+"/", files); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

// scanDir adds the manifests of dir to files, named prefix+name.
func scanDir(dir, prefix string, files map[string]fileStat) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !IsManifest(e.Name()) {
			continue
		}
		info, err := os.Stat(filepath.Join(dir, e.Name())) // follows symlinks
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		files[prefix+e.Name()] = fileStat{size: info.Size(), mtime: info.ModTime()}
	}
	return nil
}

// path is where file name is: a name with a slash is an application's
// file in the apps dir (names in the manifests dir have none).
func (w *worker) path(name string) string {
	if strings.Contains(name, "/") && w.cfg.AppsDir != "" {
		return filepath.Join(w.cfg.AppsDir, filepath.FromSlash(name))
	}
	return filepath.Join(w.cfg.Dir, name)
}

// appDirs are the applications' directories in the apps dir.
func (w *worker) appDirs() []string {
	entries, _ := os.ReadDir(w.cfg.AppsDir)
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(w.cfg.AppsDir, e.Name()))
		}
	}
	return out
}

func (w *worker) states(ctx context.Context) (map[string]State, error) {
	list, err := List(ctx, w.client)
	if err != nil {
		return nil, err
	}
	out := make(map[string]State, len(list))
	for _, fs := range list {
		out[fs.File] = fs.State
	}
	return out, nil
}

// logOnce runs log unless the last error of key was already msg.
func (w *worker) logOnce(key, msg string, log func()) {
	o := w.done[key]
	if o.err != msg {
		log()
	}
	o.err = msg
	w.done[key] = o
}

// applyFile applies one file and records the outcome in the cluster.
func (w *worker) applyFile(ctx context.Context, name string, data []byte, h string) {
	begin := time.Now()
	objs, perr := Parse(data)
	if perr != nil {
		// Nothing is applied or deleted: a half-written file must not
		// remove what the last good copy applied.
		perr = fmt.Errorf("parse: %w", perr)
		w.finish(ctx, name, h, perr, false, func(st *State) {})
		return
	}
	id := FileID(name)
	// Record the intent first: if kubox stops half-way, the objects
	// applied are known and get deleted with the file.
	var prev []Ref
	intent := make([]Ref, 0, len(objs))
	for _, o := range objs {
		intent = append(intent, w.resolve(RefOf(o)))
	}
	if _, err := w.update(ctx, name, func(st *State) {
		prev = st.Objects
		st.Objects = Union(st.Objects, intent)
	}); err != nil {
		w.finish(ctx, name, h, fmt.Errorf("record in the cluster: %w", err), true, nil)
		return
	}

	var errs []string
	applied := make([]Ref, len(objs))
	pending := make([]int, 0)
	for i, o := range objs {
		ref, err := w.applyObject(ctx, o, id)
		applied[i] = ref
		if meta.IsNoMatchError(err) {
			pending = append(pending, i)
		} else if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", RefOf(o), err))
		}
	}
	// Kinds the API does not serve yet: a CRD applied above becomes
	// served within seconds; forget the cached discovery and try again.
	deadline := time.Now().Add(w.cfg.KindWait)
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		w.mapper.Reset()
		var still []int
		for _, i := range pending {
			ref, err := w.applyObject(ctx, objs[i], id)
			applied[i] = ref
			if meta.IsNoMatchError(err) {
				still = append(still, i)
			} else if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", RefOf(objs[i]), err))
			}
		}
		pending = still
	}
	for _, i := range pending {
		errs = append(errs, fmt.Sprintf("%s: the API serves no kind %s", RefOf(objs[i]), objs[i].GroupVersionKind()))
	}

	var kept []Ref
	removed := Removed(prev, applied)
	for _, r := range removed {
		if err := w.deleteObject(ctx, r, id); err != nil {
			kept = append(kept, r)
			errs = append(errs, fmt.Sprintf("delete %s: %v", r, err))
		}
	}
	var err error
	if len(errs) > 0 {
		err = errors.New(strings.Join(errs, "; "))
	}
	w.finish(ctx, name, h, err, err != nil, func(st *State) {
		st.Objects = Union(applied, kept)
		st.SHA256, st.AppliedBy, st.AppliedAt = h, w.cfg.NodeName, time.Now().UTC()
	})
	if err == nil {
		w.cfg.Log.Info("manifest applied", "file", name, "objects", len(objs), "deleted", len(removed)-len(kept),
			"took", time.Since(begin).Round(time.Millisecond))
	}
}

// finish records this box's outcome for a file (and what set changes,
// unless nil), logs an error once and raises an Event on the file's state
// ConfigMap.
func (w *worker) finish(ctx context.Context, name, h string, err error, retry bool, set func(*State)) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	cm, uerr := w.update(ctx, name, func(st *State) {
		if set != nil {
			set(st)
		}
		st.Boxes[w.cfg.NodeName] = BoxState{SHA256: h, Error: msg, Time: time.Now().UTC()}
	})
	if uerr != nil {
		retry = true
		if err == nil {
			err, msg = uerr, uerr.Error()
		}
	} else {
		w.held[name] = true
	}
	o := w.done[name]
	o.hash, o.retry, o.broken = h, retry, err != nil && !retry
	w.done[name] = o
	if err == nil {
		w.done[name] = outcome{hash: h}
		if cm != nil {
			w.recorder.Eventf(cm, corev1.EventTypeNormal, "ManifestApplied", "%s: %s applied", w.cfg.NodeName, name)
		}
		return
	}
	w.logOnce(name, msg, func() {
		w.cfg.Log.Warn("manifest not applied", "file", w.path(name), "err", msg)
		if cm != nil {
			w.recorder.Eventf(cm, corev1.EventTypeWarning, "ManifestFailed", "%s: %s: %s", w.cfg.NodeName, name, msg)
		}
	})
}

// update changes file's state ConfigMap (created if missing), retrying on
// conflicts with other boxes, and returns it.
func (w *worker) update(ctx context.Context, name string, change func(*State)) (*corev1.ConfigMap, error) {
	cms := w.client.CoreV1().ConfigMaps(StateNamespace)
	var out *corev1.ConfigMap
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, StateName(name), metav1.GetOptions{})
		create := apierrors.IsNotFound(err)
		if create {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: StateName(name), Namespace: StateNamespace}}
			err = encodeState(cm, State{File: name})
		}
		if err != nil {
			return err
		}
		st, err := decodeState(cm)
		if err != nil {
			return err
		}
		st.File = name
		change(&st)
		if err := encodeState(cm, st); err != nil {
			return err
		}
		if create {
			out, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: FieldManager})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), cm.Name, err)
			}
			return err
		}
		out, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	return out, err
}

// release lets go of a file this box no longer holds (leave), or finishes
// a removal; when no box holds the file any more, its objects and its
// state are deleted.
func (w *worker) release(ctx context.Context, name string, leave bool) {
	id := FileID(name)
	cms := w.client.CoreV1().ConfigMaps(StateNamespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, StateName(name), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		st, err := decodeState(cm)
		if err != nil {
			return err
		}
		if leave {
			delete(st.Boxes, w.cfg.NodeName)
		}
		if len(st.Boxes) > 0 && !leave {
			return nil
		}
		if len(st.Boxes) > 0 {
			// Another box still holds the file: its objects stay.
			if err := encodeState(cm, st); err != nil {
				return err
			}
			_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		}
		var kept []Ref
		var errs []string
		for _, r := range Removed(st.Objects, nil) {
			if err := w.deleteObject(ctx, r, id); err != nil {
				kept = append(kept, r)
				errs = append(errs, fmt.Sprintf("delete %s: %v", r, err))
			}
		}
		if len(kept) == 0 {
			rv := cm.ResourceVersion
			err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				w.cfg.Log.Info("manifest removed: its objects are deleted", "file", name, "objects", len(st.Objects))
				return nil
			}
			return err
		}
		st.Objects = kept
		if err := encodeState(cm, st); err != nil {
			return err
		}
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return err
		}
		return errors.New(strings.Join(errs, "; "))
	})
	if err != nil {
		w.logOnce(name, err.Error(), func() { w.cfg.Log.Warn("removing a manifest's objects; retried", "file", name, "err", err) })
		return
	}
	if leave {
		delete(w.held, name)
		delete(w.done, name)
		delete(w.seen, name)
	}
}

// mapping finds r's resource; an unknown kind is looked up once more after
// forgetting the cached discovery.
func (w *worker) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		w.mapper.Reset()
		m, err = w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

// resolve fills in the namespace a namespaced object without one gets
// ("default", as kubectl does), when its kind is known.
func (w *worker) resolve(r Ref) Ref {
	m, err := w.mapper.RESTMapping(r.GroupKind(), schema.FromAPIVersionAndKind(r.APIVersion, r.Kind).Version)
	if err != nil {
		return r
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if r.Namespace == "" {
			r.Namespace = metav1.NamespaceDefault
		}
	} else {
		r.Namespace = ""
	}
	return r
}

func (w *worker) resource(m *meta.RESTMapping, ns string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return w.dyn.Resource(m.Resource).Namespace(ns)
	}
	return w.dyn.Resource(m.Resource)
}

// applyObject server-side applies o, labelled with its file, and returns
// its reference with the namespace it went to.
func (w *worker) applyObject(ctx context.Context, o *unstructured.Unstructured, id string) (Ref, error) {
	ref := w.resolve(RefOf(o))
	m, err := w.mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
	if err != nil {
		return ref, err
	}
	o = o.DeepCopy()
	o.SetNamespace(ref.Namespace)
	labels := o.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[FileLabel] = id
	o.SetLabels(labels)
	// Force: the file is what the operator declared; a field another
	// manager took (kubectl edit) goes back to the file's value instead of
	// the file failing until someone steps in. Fields the file does not
	// set stay with whoever set them.
	_, err = w.resource(m, ref.Namespace).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	return ref, err
}

// deleteObject deletes r if it still carries the label of file id (an
// object that moved to another file is left alone).
func (w *worker) deleteObject(ctx context.Context, r Ref, id string) error {
	m, err := w.mapping(schema.FromAPIVersionAndKind(r.APIVersion, r.Kind))
	if meta.IsNoMatchError(err) {
		return nil // the kind is gone (its CRD was deleted), so is the object
	}
	if err != nil {
		return err
	}
	ri := w.resource(m, r.Namespace)
	live, err := ri.Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if live.GetLabels()[FileLabel] != id {
		w.cfg.Log.Info("not deleting an object another file now applies", "object", r.String())
		return nil
	}
	policy, uid := metav1.DeletePropagationBackground, live.GetUID()
	err = ri.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
