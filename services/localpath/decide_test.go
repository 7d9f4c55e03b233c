package localpath

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	storagehelpers "k8s.io/component-helpers/storage/volume"
)

const uid = "0b9f3c1e-6a1d-4c5e-9a43-7a0f5e2d1c11"

func claim(mut func(c *corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	class := DefaultClass
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: "data-db-0", Namespace: "shop", UID: uid,
			Annotations: map[string]string{storagehelpers.AnnSelectedNode: "box1"},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
	if mut != nil {
		mut(c)
	}
	return c
}

func TestClaimToProvision(t *testing.T) {
	ours := Classes(true)[0]
	other := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "nfs"}, Provisioner: "example.com/nfs"}
	block := corev1.PersistentVolumeBlock
	for _, tc := range []struct {
		name    string
		claim   *corev1.PersistentVolumeClaim
		class   *storagev1.StorageClass
		want    bool
		wantErr string
	}{
		{"ours", claim(nil), ours, true, ""},
		{"other box", claim(func(c *corev1.PersistentVolumeClaim) { c.Annotations[storagehelpers.AnnSelectedNode] = "box2" }), ours, false, ""},
		{"not scheduled yet", claim(func(c *corev1.PersistentVolumeClaim) { c.Annotations = nil }), ours, false, ""},
		{"other provisioner", claim(nil), other, false, ""},
		{"class unknown", claim(nil), nil, false, ""},
		{"bound", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeName = "pvc-x" }), ours, false, ""},
		{"being deleted", claim(func(c *corev1.PersistentVolumeClaim) { now := metav1.Now(); c.DeletionTimestamp = &now }), ours, false, ""},
		{"lost", claim(func(c *corev1.PersistentVolumeClaim) { c.Status.Phase = corev1.ClaimLost }), ours, false, ""},
		{"block", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block }), ours, false, "volume mode Block"},
		{"rwx", claim(func(c *corev1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		}), ours, false, "access mode ReadWriteMany"},
		{"selector", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.Selector = &metav1.LabelSelector{} }), ours, false, "selector"},
		{"no request", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }), ours, false, "requests no storage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClaimToProvision(tc.claim, tc.class, "box1")
			if got != tc.want {
				t.Errorf("provision = %v, want %v", got, tc.want)
			}
			if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}

func TestDirName(t *testing.T) {
	got, err := DirName(claim(nil))
	if want := "pvc-" + uid + "_shop_data-db-0"; err != nil || got != want {
		t.Fatalf("DirName = %q %v, want %q", got, err, want)
	}
	long := claim(func(c *corev1.PersistentVolumeClaim) { c.Name = strings.Repeat("a", 253) })
	if got, _ := DirName(long); got != "pvc-"+uid {
		t.Errorf("too long a name: DirName = %q, want the PV name alone", got)
	}
	for _, bad := range []string{"..", "a/b", "a_b", ""} {
		if _, err := DirName(claim(func(c *corev1.PersistentVolumeClaim) { c.Name = bad })); err == nil {
			t.Errorf("name %q accepted as part of a directory name", bad)
		}
	}
}

func TestVolume(t *testing.T) {
	classes := Classes(false)
	c := claim(nil)
	pv := Volume(c, classes[1], "box1", "box1-host", "/var/lib/kubox/storage/d")
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain || pv.Spec.StorageClassName != RetainClass {
		t.Errorf("retain class: reclaim %s class %s", pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.StorageClassName)
	}
	if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.String() != "1Gi" {
		t.Errorf("capacity %s, want the request 1Gi", q.String())
	}
	if pv.Spec.ClaimRef.UID != c.UID || pv.Annotations[storagehelpers.AnnDynamicallyProvisioned] != ProvisionerName || pv.Annotations[AnnNode] != "box1" {
		t.Errorf("claim ref or annotations: %+v %v", pv.Spec.ClaimRef, pv.Annotations)
	}
	if v := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0]; v.Key != corev1.LabelHostname || v.Values[0] != "box1-host" {
		t.Errorf("node affinity %+v", v)
	}
	if IsDefault(classes[0]) || !IsDefault(Classes(true)[0]) || IsDefault(Classes(true)[1]) {
		t.Errorf("only local-path is marked default, and only when asked")
	}
}

func TestToDeleteAndDeletableDir(t *testing.T) {
	const storage = "/var/lib/kubox/storage"
	c := claim(nil)
	dir, _ := DirName(c)
	pv := Volume(c, Classes(false)[0], "box1", "box1", storage+"/"+dir)
	pv.Status.Phase = corev1.VolumeReleased
	if !ToDelete(pv, "box1") {
		t.Error("released Delete volume of box1 not deleted by box1")
	}
	if ToDelete(pv, "box2") {
		t.Error("box2 would delete box1's volume")
	}
	bound := pv.DeepCopy()
	bound.Status.Phase = corev1.VolumeBound
	retained := pv.DeepCopy()
	retained.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	foreign := pv.DeepCopy()
	delete(foreign.Annotations, storagehelpers.AnnDynamicallyProvisioned)
	for name, v := range map[string]*corev1.PersistentVolume{"bound": bound, "retain": retained, "not ours": foreign} {
		if ToDelete(v, "box1") {
			t.Errorf("%s volume would be deleted", name)
		}
	}

	if got, err := DeletableDir(storage, pv); err != nil || got != dir {
		t.Errorf("DeletableDir = %q %v, want %q", got, err, dir)
	}
	if got, err := DeletableDir(storage+"/", pv); err != nil || got != dir {
		t.Errorf("storage dir with a trailing slash: %q %v", got, err)
	}
	for _, path := range []string{
		"/var/lib/kubox/storage",                       // the storage dir itself
		"/var/lib/kubox/storage/" + dir + "/sub",       // deeper
		"/var/lib/kubox/storage/../" + dir,             // not clean
		"/var/lib/kubox/other/" + dir,                  // elsewhere
		"/var/lib/kubox/storage/pvc-other_shop_data",   // another volume's name
		"/var/lib/kubox/storage/" + pv.Name + "x",      // a longer name
		"storage/" + dir,                               // relative
		"/var/lib/kubox/storage/" + dir + "/../../etc", // escapes
	} {
		v := pv.DeepCopy()
		v.Spec.Local.Path = path
		if got, err := DeletableDir(storage, v); err == nil {
			t.Errorf("path %q: would remove %q", path, got)
		}
	}
	host := pv.DeepCopy()
	host.Spec.Local = nil
	host.Spec.HostPath = &corev1.HostPathVolumeSource{Path: storage + "/" + dir}
	if _, err := DeletableDir(storage, host); err == nil {
		t.Error("a hostPath volume would be removed")
	}
}
