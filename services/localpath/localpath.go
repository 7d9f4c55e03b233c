// Package localpath provisions local persistent volumes inside kubox, with
// no helper pod and no image: for a claim of one of its StorageClasses that
// the scheduler placed on this box (WaitForFirstConsumer sets the claim's
// volume.kubernetes.io/selected-node), it makes a directory in this box's
// storage dir and a `local` PV bound to the claim with node affinity to
// this box; when a claim of reclaim policy Delete is deleted, it removes
// the directory and the PV. It speaks the external provisioner protocol:
// the PV controller marks such claims for provisioner kubox.io/local-path,
// binds the pre-bound PV, and leaves released PVs whose
// pv.kubernetes.io/provisioned-by is kubox.io/local-path to it.
//
// Every box with a kubelet runs one and acts only for its own node, so no
// leader election is needed and two boxes never touch the same volume.
package localpath

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/kubox/kubox/component"
	"github.com/kubox/kubox/internal/fsutil"
	"github.com/kubox/kubox/internal/mounts"
)

// Config is one box's provisioner.
type Config struct {
	NodeName string
	// Dir is the storage dir: one directory per volume, directly in it.
	Dir    string
	Client kubernetes.Interface
	Log    *slog.Logger
	// Resync is how often every claim and volume is looked at again
	// (0 = 5 minutes); events drive the work, this only catches up.
	Resync time.Duration
}

// dirMode: only root on the host may look into the storage dir; each
// volume's directory is 0777, as k3s's local-path makes them, so a
// container of any user can write to its volume without an fsGroup (the
// directory is reached only through the pod's bind mount).
const (
	dirMode    = 0o700
	volumeMode = 0o777
)

// Provisioner is the component.
type Provisioner struct {
	cfg    Config
	run    component.Goroutine
	synced chan struct{} // closed once the caches synced and the classes exist
}

// The loop ends only when stopped (informers and the class set-up retry),
// so the provisioner is not a component.Failer.
var (
	_ component.Component   = (*Provisioner)(nil)
	_ component.Initializer = (*Provisioner)(nil)
	_ component.Readier     = (*Provisioner)(nil)
)

// New returns a provisioner for cfg.
func New(cfg Config) *Provisioner {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	return &Provisioner{cfg: cfg, synced: make(chan struct{})}
}

func (p *Provisioner) Name() string                   { return "local-path" }
func (p *Provisioner) Stop(ctx context.Context) error { return p.run.Stop(ctx) }

// Init makes the storage dir.
func (p *Provisioner) Init(context.Context) error {
	if !filepath.IsAbs(p.cfg.Dir) {
		return fmt.Errorf("storage dir %q: must be an absolute path", p.cfg.Dir)
	}
	return fsutil.EnsureDir(p.cfg.Dir, dirMode)
}

// Ready waits until the StorageClasses exist and the caches synced.
func (p *Provisioner) Ready(ctx context.Context) error {
	select {
	case <-p.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("local-path provisioner: StorageClasses or caches not ready: %w", ctx.Err())
	}
}

// worker is what one run of the provisioner holds.
type worker struct {
	cfg      Config
	root     *os.Root
	claims   corelisters.PersistentVolumeClaimLister
	volumes  corelisters.PersistentVolumeLister
	classes  storagelisters.StorageClassLister
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
}

// Keys of the work queue: a claim or a volume.
const (
	claimKey  = "claim/"
	volumeKey = "volume/"
)

// Start watches claims, volumes and classes, creates the classes if
// missing, and works the queue.
func (p *Provisioner) Start(ctx context.Context) error {
	root, err := os.OpenRoot(p.cfg.Dir)
	if err != nil {
		return fmt.Errorf("open storage dir: %w", err)
	}
	factory := informers.NewSharedInformerFactory(p.cfg.Client, p.cfg.Resync)
	w := &worker{
		cfg:     p.cfg,
		root:    root,
		claims:  factory.Core().V1().PersistentVolumeClaims().Lister(),
		volumes: factory.Core().V1().PersistentVolumes().Lister(),
		classes: factory.Storage().V1().StorageClasses().Lister(),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
	enqueue := func(prefix string) cache.ResourceEventHandlerFuncs {
		add := func(obj any) {
			if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
				w.queue.Add(prefix + key)
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
	}
	if _, err := factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(enqueue(claimKey)); err != nil {
		root.Close()
		return fmt.Errorf("watch persistent volume claims: %w", err)
	}
	if _, err := factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(enqueue(volumeKey)); err != nil {
		root.Close()
		return fmt.Errorf("watch persistent volumes: %w", err)
	}
	factory.Storage().V1().StorageClasses().Informer()

	p.run.Go(ctx, "local-path provisioner", func(ctx context.Context) error {
		defer root.Close()
		events := record.NewBroadcaster(record.WithContext(ctx))
		defer events.Shutdown()
		events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.cfg.Client.CoreV1().Events("")})
		w.recorder = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: ProvisionerName, Host: p.cfg.NodeName})

		factory.Start(ctx.Done())
		defer factory.Shutdown()
		defer w.queue.ShutDown()
		if err := w.ensureClasses(ctx); err != nil {
			return nil // stopped
		}
		if !cache.WaitForCacheSync(ctx.Done(), factory.Core().V1().PersistentVolumeClaims().Informer().HasSynced,
			factory.Core().V1().PersistentVolumes().Informer().HasSynced, factory.Storage().V1().StorageClasses().Informer().HasSynced) {
			return nil
		}
		close(p.synced)
		go func() {
			<-ctx.Done()
			w.queue.ShutDown()
		}()
		for w.next(ctx) {
		}
		return nil
	})
	return nil
}

// ensureClasses creates kubox's StorageClasses that are missing, retrying
// until it succeeds or ctx ends. A class that exists is left as it is, so a
// user's edits stay; local-path is made the default only when no other
// class is.
func (w *worker) ensureClasses(ctx context.Context) error {
	return wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := w.cfg.Client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
		if err != nil {
			w.cfg.Log.Warn("list storage classes (retrying)", "err", err)
			return false, nil
		}
		have, anyDefault := map[string]bool{}, false
		for i := range list.Items {
			have[list.Items[i].Name] = true
			anyDefault = anyDefault || IsDefault(&list.Items[i])
		}
		for _, class := range Classes(!anyDefault) {
			if have[class.Name] {
				continue
			}
			_, err := w.cfg.Client.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				w.cfg.Log.Warn("create storage class (retrying)", "class", class.Name, "err", err)
				return false, nil
			}
			if err == nil {
				w.cfg.Log.Info("created storage class", "class", class.Name, "default", IsDefault(class))
			}
		}
		return true, nil
	})
}

// next works one key of the queue; false once the queue is shut down.
func (w *worker) next(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	var err error
	switch {
	case len(key) > len(claimKey) && key[:len(claimKey)] == claimKey:
		err = w.syncClaim(ctx, key[len(claimKey):])
	case len(key) > len(volumeKey) && key[:len(volumeKey)] == volumeKey:
		err = w.syncVolume(ctx, key[len(volumeKey):])
	}
	if err != nil && ctx.Err() == nil {
		w.cfg.Log.Warn("local-path (retrying)", "object", key, "err", err)
		w.queue.AddRateLimited(key)
		return true
	}
	w.queue.Forget(key)
	return true
}

// syncClaim provisions a volume for the claim if it is this box's to make.
func (w *worker) syncClaim(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	claim, err := w.claims.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	var class *storagev1.StorageClass
	if claim.Spec.StorageClassName != nil {
		class, _ = w.classes.Get(*claim.Spec.StorageClassName)
	}
	ok, why := ClaimToProvision(claim, class, w.cfg.NodeName)
	if why != nil {
		// Not retried: only a change of the claim can fix it.
		w.recorder.Event(claim, corev1.EventTypeWarning, "ProvisioningFailed", why.Error())
		return nil
	}
	if !ok {
		return nil
	}
	if pv, err := w.volumes.Get(VolumeName(claim)); err == nil && pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID == claim.UID {
		return nil // made already; the PV controller binds it
	}
	if err := w.provision(ctx, claim, class); err != nil {
		w.recorder.Event(claim, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		return err
	}
	return nil
}

// provision makes the claim's directory and its PV.
func (w *worker) provision(ctx context.Context, claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass) error {
	dir, err := DirName(claim)
	if err != nil {
		return err
	}
	hostname := w.cfg.NodeName
	if node, err := w.cfg.Client.CoreV1().Nodes().Get(ctx, w.cfg.NodeName, metav1.GetOptions{}); err == nil && node.Labels[labelHostname] != "" {
		hostname = node.Labels[labelHostname]
	} else if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read node %s: %w", w.cfg.NodeName, err)
	}
	if err := w.makeDir(dir); err != nil {
		return err
	}
	path := filepath.Join(w.cfg.Dir, dir)
	pv := Volume(claim, class, w.cfg.NodeName, hostname, path)
	_, err = w.cfg.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Made by an earlier try whose answer was lost, or a stale PV
		// that still holds the name: the claim's UID says which.
		got, gerr := w.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if gerr == nil && got.Spec.ClaimRef != nil && got.Spec.ClaimRef.UID == claim.UID {
			return nil
		}
		return fmt.Errorf("create persistent volume %s: it exists and is not this claim's", pv.Name)
	}
	if err != nil {
		return fmt.Errorf("create persistent volume %s: %w", pv.Name, err)
	}
	size := Capacity(claim)
	w.cfg.Log.Info("provisioned local volume", "claim", claim.Namespace+"/"+claim.Name, "volume", pv.Name, "path", path, "capacity", size.String(), "reclaim", pv.Spec.PersistentVolumeReclaimPolicy)
	w.recorder.Eventf(claim, corev1.EventTypeNormal, "ProvisioningSucceeded", "Successfully provisioned volume %s in %s on node %s", pv.Name, path, w.cfg.NodeName)
	return nil
}

// makeDir creates dir in the storage dir with volumeMode, or accepts it if
// a directory (not a symlink) is there already.
func (w *worker) makeDir(dir string) error {
	if err := w.root.Mkdir(dir, volumeMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create volume directory %s: %w", filepath.Join(w.cfg.Dir, dir), err)
	}
	fi, err := w.root.Lstat(dir)
	if err != nil {
		return fmt.Errorf("volume directory %s: %w", filepath.Join(w.cfg.Dir, dir), err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("volume directory %s exists and is not a directory", filepath.Join(w.cfg.Dir, dir))
	}
	// Mkdir's mode went through the umask.
	if err := w.root.Chmod(dir, volumeMode); err != nil {
		return fmt.Errorf("set mode of volume directory %s: %w", filepath.Join(w.cfg.Dir, dir), err)
	}
	return nil
}

// syncVolume deletes a released volume of this box with reclaim policy
// Delete: its directory first, then the PV.
func (w *worker) syncVolume(ctx context.Context, name string) error {
	pv, err := w.volumes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if !ToDelete(pv, w.cfg.NodeName) {
		return nil
	}
	dir, err := DeletableDir(w.cfg.Dir, pv)
	if err != nil {
		// Not retried: kubox never removes what it did not make.
		w.recorder.Event(pv, corev1.EventTypeWarning, "VolumeFailedDelete", err.Error()+"; delete the PV and its data by hand")
		w.cfg.Log.Warn("not deleting local volume", "volume", pv.Name, "err", err)
		return nil
	}
	full := filepath.Join(w.cfg.Dir, dir)
	// A mount left inside (a kubelet that did not finish unmounting)
	// would have RemoveAll delete what the mount holds.
	if points, err := mounts.Under(full); err != nil {
		return err
	} else if len(points) > 0 {
		return fmt.Errorf("volume directory %s still has mounts (%s): not removing it yet", full, points[0])
	}
	// os.Root never follows a symlink out of the storage dir.
	if err := w.root.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove volume directory %s: %w", full, err)
	}
	uid := pv.UID
	err = w.cfg.Client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete persistent volume %s: %w", pv.Name, err)
	}
	w.cfg.Log.Info("deleted local volume", "volume", pv.Name, "path", full)
	return nil
}
