package localpath

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	storagehelpers "k8s.io/component-helpers/storage/volume"
)

// The names kubox gives: its provisioner, its two StorageClasses, and the
// annotation that records which box holds a volume's directory.
const (
	ProvisionerName = "kubox.io/local-path"
	DefaultClass    = "local-path"
	RetainClass     = "local-path-retain"
	// AnnNode on a PV names the node whose storage dir holds it: that
	// box, and only that one, deletes it.
	AnnNode = "kubox.io/local-path-node"
	// annDefaultClass marks the cluster's default StorageClass.
	annDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	annBetaDefaultClass = "storageclass.beta.kubernetes.io/is-default-class"
	labelHostname       = corev1.LabelHostname
	// volumePrefix: PV names are pvc-<claim UID>, as every external
	// provisioner names them; the directory name starts with it.
	volumePrefix = "pvc-"
	// maxDirName is the longest file name ext4 and xfs take.
	maxDirName = 255
)

// ClaimToProvision decides whether this box (node) provisions claim, whose
// StorageClass is class (nil when unknown). It returns false and nil when
// the claim is not this box's business, or needs nothing (already bound,
// going away); true when a volume is to be made; false and an error when
// the claim is ours but cannot be served, saying why (for an Event).
func ClaimToProvision(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, node string) (bool, error) {
	if class == nil || class.Provisioner != ProvisionerName {
		return false, nil
	}
	if claim.DeletionTimestamp != nil || claim.Spec.VolumeName != "" || claim.Status.Phase == corev1.ClaimLost {
		return false, nil
	}
	// The scheduler names the box it chose (WaitForFirstConsumer); a claim
	// for another box is that box's kubox's.
	if claim.Annotations[storagehelpers.AnnSelectedNode] != node {
		return false, nil
	}
	if claim.Spec.Selector != nil {
		return false, errors.New("claims with a selector cannot be provisioned: a local-path volume is made for the claim, not picked by labels")
	}
	if claim.Spec.DataSource != nil || claim.Spec.DataSourceRef != nil {
		return false, errors.New("claims with a data source cannot be provisioned: local-path volumes start empty")
	}
	if m := claim.Spec.VolumeMode; m != nil && *m != corev1.PersistentVolumeFilesystem {
		return false, fmt.Errorf("volume mode %s is not supported: local-path volumes are directories (Filesystem)", *m)
	}
	for _, m := range claim.Spec.AccessModes {
		if m != corev1.ReadWriteOnce && m != corev1.ReadWriteOncePod {
			return false, fmt.Errorf("access mode %s is not supported: a local-path volume lives on one box (use ReadWriteOnce or ReadWriteOncePod)", m)
		}
	}
	if _, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
		return false, errors.New("the claim requests no storage (resources.requests.storage)")
	}
	if _, err := DirName(claim); err != nil {
		return false, err
	}
	return true, nil
}

// VolumeName is the PV's name for claim.
func VolumeName(claim *corev1.PersistentVolumeClaim) string {
	return volumePrefix + string(claim.UID)
}

// DirName is the name of claim's directory in the storage dir:
// pvc-<UID>_<namespace>_<claim>, so an operator looking at the disk sees
// whose it is (k3s's local-path names them the same way), or the PV's name
// alone when that would be too long for a file name. The API server
// validates the names, but what becomes a path is checked here too.
func DirName(claim *corev1.PersistentVolumeClaim) (string, error) {
	for _, part := range []string{string(claim.UID), claim.Namespace, claim.Name} {
		if !safeName(part) {
			return "", fmt.Errorf("name %q cannot be part of a directory name", part)
		}
	}
	vol := VolumeName(claim)
	name := vol + "_" + claim.Namespace + "_" + claim.Name
	if len(name) > maxDirName {
		name = vol
	}
	return name, nil
}

// safeName: a non-empty name with no path separator, NUL or '_' (the
// separator of DirName's parts), and not . or ...
func safeName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00_")
}

// Volume is the PV that serves claim from path on node, whose
// kubernetes.io/hostname label is hostname.
func Volume(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, node, hostname, path string) *corev1.PersistentVolume {
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: VolumeName(claim),
			Annotations: map[string]string{
				storagehelpers.AnnDynamicallyProvisioned: ProvisionerName,
				AnnNode:                                  node,
			},
		},
		Spec: corev1.PersistentVolumeSpec{
			// Recorded, not enforced by the volume (see the README).
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: claim.Spec.Resources.Requests[corev1.ResourceStorage].DeepCopy()},
			AccessModes:                   slices.Clone(claim.Spec.AccessModes),
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    &fs,
			MountOptions:                  slices.Clone(class.MountOptions),
			// Pre-bound: the PV controller completes the binding.
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID, ResourceVersion: claim.ResourceVersion,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: labelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname},
				}}}},
			}},
		},
	}
}

// Capacity is what claim requests.
func Capacity(claim *corev1.PersistentVolumeClaim) resource.Quantity {
	return claim.Spec.Resources.Requests[corev1.ResourceStorage]
}

// ToDelete reports whether node deletes volume now: one kubox provisioned
// on this node, released by its claim, with reclaim policy Delete.
func ToDelete(volume *corev1.PersistentVolume, node string) bool {
	return volume.Annotations[storagehelpers.AnnDynamicallyProvisioned] == ProvisionerName &&
		volume.Annotations[AnnNode] == node &&
		volume.DeletionTimestamp == nil &&
		volume.Status.Phase == corev1.VolumeReleased &&
		volume.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete
}

// DeletableDir returns the name, in storageDir, of volume's directory, or
// an error when its path is not one kubox made there: directly in
// storageDir (no deeper, no ..), named after the volume. Only such a
// directory is ever removed.
func DeletableDir(storageDir string, volume *corev1.PersistentVolume) (string, error) {
	if volume.Spec.Local == nil {
		return "", fmt.Errorf("volume %s is not a local volume", volume.Name)
	}
	p := volume.Spec.Local.Path
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || filepath.Dir(p) != filepath.Clean(storageDir) {
		return "", fmt.Errorf("volume %s: path %q is not directly in the storage dir %s", volume.Name, p, storageDir)
	}
	base := filepath.Base(p)
	if !strings.HasPrefix(volume.Name, volumePrefix) || !safeName(strings.TrimPrefix(volume.Name, volumePrefix)) ||
		(base != volume.Name && !strings.HasPrefix(base, volume.Name+"_")) {
		return "", fmt.Errorf("volume %s: directory %q is not one kubox named for it", volume.Name, base)
	}
	return base, nil
}

// IsDefault reports whether class is marked as the default class.
func IsDefault(class *storagev1.StorageClass) bool {
	return class.Annotations[annDefaultClass] == "true" || class.Annotations[annBetaDefaultClass] == "true"
}

// Classes are kubox's StorageClasses: local-path (reclaim Delete; the
// default class unless another one is) and local-path-retain. Both wait
// for the first consumer, so the scheduler picks the box first.
func Classes(markDefault bool) []*storagev1.StorageClass {
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	class := func(name string, reclaim corev1.PersistentVolumeReclaimPolicy) *storagev1.StorageClass {
		return &storagev1.StorageClass{
			ObjectMeta:        metav1.ObjectMeta{Name: name, Annotations: map[string]string{}},
			Provisioner:       ProvisionerName,
			ReclaimPolicy:     &reclaim,
			VolumeBindingMode: &wait,
		}
	}
	del, keep := class(DefaultClass, corev1.PersistentVolumeReclaimDelete), class(RetainClass, corev1.PersistentVolumeReclaimRetain)
	if markDefault {
		del.Annotations[annDefaultClass] = "true"
	}
	return []*storagev1.StorageClass{del, keep}
}
