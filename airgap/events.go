package airgap

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Event reasons the images-dir watcher posts.
const (
	ReasonImporting        = "ImportingImages"  // on the Node: an import began (updated with its progress)
	ReasonImported         = "ImagesImported"   // on the Node: it finished
	ReasonImportFailed     = "ImportFailed"     // on the Node, Warning: the bundle was refused
	ReasonWaitingForImport = "WaitingForImport" // on a pod whose image the running import brings
)

// eventEvery is how often, at most, the import's Event is updated and the
// node's pods are looked at again.
const eventEvery = 30 * time.Second

// maxEventMessage keeps a message within what Events are meant to carry.
const maxEventMessage = 1024

// importEvents posts the Events of the images dir's imports: on the Node,
// and on pods waiting for an image of the bundle being imported, once per
// pod and import. Events are best effort: an API that does not answer only
// costs a debug line. A nil client posts nothing.
type importEvents struct {
	client  kubernetes.Interface
	node    string
	nodeUID types.UID
	log     *slog.Logger

	// The import under way.
	file     string
	images   map[string]bool // normalized names
	current  *corev1.Event   // its ImportingImages Event
	notified map[types.UID]bool
	last     time.Time
}

func (e *importEvents) begin(ctx context.Context, file string, m *Manifest, t Transfer) {
	if e.client == nil {
		return
	}
	e.file, e.images, e.notified, e.last = file, map[string]bool{}, map[types.UID]bool{}, time.Now()
	names := make([]string, 0, len(m.Images))
	for _, im := range m.Images {
		e.images[im.Name] = true
		names = append(names, im.Name)
	}
	msg := fmt.Sprintf("importing bundle %s: %s, %d images (%s)", file, MB(t.Total), len(names), strings.Join(names, ", "))
	if t.Skipped() > 0 {
		msg += fmt.Sprintf("; %s already in containerd, not written again", MB(t.Skipped()))
	}
	e.current = e.post(ctx, e.nodeRef(), corev1.EventTypeNormal, ReasonImporting, msg)
	e.notifyPods(ctx, 0)
}

func (e *importEvents) progress(ctx context.Context, file string, t Transfer) {
	if e.client == nil || e.file != file || time.Since(e.last) < eventEvery {
		return
	}
	e.last = time.Now()
	if ev := e.current; ev != nil {
		ev.Message = fmt.Sprintf("importing bundle %s: %.0f%% (%s of %s, %.1f MB/s)", file, t.Percent(), MB(t.Read), MB(t.Total), t.MBps())
		ev.LastTimestamp = metav1.Now()
		upd, err := e.client.CoreV1().Events(ev.Namespace).Update(ctx, ev, metav1.UpdateOptions{})
		if err != nil {
			e.log.Debug("update event", "reason", ev.Reason, "err", err)
		} else {
			e.current = upd
		}
	}
	e.notifyPods(ctx, t.Percent())
}

// end posts how the import of file ended; res may be nil.
func (e *importEvents) end(ctx context.Context, file string, res *Result, err error) {
	if e.client == nil {
		return
	}
	e.file, e.current = "", nil
	if err != nil {
		e.post(ctx, e.nodeRef(), corev1.EventTypeWarning, ReasonImportFailed,
			fmt.Sprintf("bundle %s not imported (tried again when the file changes): %v", file, err))
		return
	}
	names := make([]string, 0, len(res.Manifest.Images))
	for _, im := range res.Manifest.Images {
		names = append(names, im.Name)
	}
	e.post(ctx, e.nodeRef(), corev1.EventTypeNormal, ReasonImported,
		fmt.Sprintf("imported bundle %s: %s in %s (%s written, %s already there), images %s", file, MB(res.Bytes),
			res.Took.Round(time.Second), MB(res.Transfer.Written), MB(res.Transfer.Skipped()), strings.Join(names, ", "))+appNote(res.App))
}

// appNote says what the import did to the bundle's application, if any.
func appNote(a AppChange) string {
	if a.App == "" {
		return ""
	}
	return fmt.Sprintf("; application %s installed (%d files written, %d unchanged, %d removed)", a.App, a.Written, a.Same, a.Removed)
}

// notifyPods posts an Event on each pod of this node not yet told that
// is waiting for an image of the bundle being imported.
func (e *importEvents) notifyPods(ctx context.Context, percent float64) {
	pods, err := e.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + e.node})
	if err != nil {
		e.log.Debug("list pods waiting for images", "err", err)
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if e.notified[p.UID] {
			continue
		}
		if img := waitingFor(p, e.images); img != "" {
			e.notified[p.UID] = true
			e.post(ctx, &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
				corev1.EventTypeNormal, ReasonWaitingForImport,
				fmt.Sprintf("image %s is being imported on node %s from bundle %s (%.0f%% done)", img, e.node, e.file, percent))
		}
	}
}

// waitingFor returns the first image of images that a container of the
// pending pod p waits for, or "".
func waitingFor(p *corev1.Pod, images map[string]bool) string {
	if p.Status.Phase != corev1.PodPending {
		return ""
	}
	started := map[string]bool{}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.State.Waiting == nil {
			started[cs.Name] = true
		}
	}
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if started[c.Name] {
			continue
		}
		if n, err := NormalizeName(c.Image); err == nil && images[n] {
			return n
		}
	}
	return ""
}

func (e *importEvents) nodeRef() *corev1.ObjectReference {
	// The kubelet's own Node Events use the node's name as UID; kubectl
	// describe node finds both.
	uid := e.nodeUID
	if uid == "" {
		uid = types.UID(e.node)
	}
	return &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: e.node, UID: uid}
}

func (e *importEvents) post(ctx context.Context, ref *corev1.ObjectReference, typ, reason, msg string) *corev1.Event {
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage-3] + "..."
	}
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ns},
		InvolvedObject: *ref,
		Reason:         reason,
		Message:        msg,
		Type:           typ,
		Source:         corev1.EventSource{Component: "kubox-airgap", Host: e.node},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	created, err := e.client.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{})
	if err != nil {
		e.log.Debug("post event", "reason", reason, "err", err)
		return nil
	}
	return created
}
