package airgap

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// A pending pod waits for a bundle's image when a container that has not
// started names it, however the name is spelled.
func TestWaitingFor(t *testing.T) {
	images := map[string]bool{"docker.io/library/busybox:1.36": true, "localhost/site/app:1": true}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull"}}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	pod := func(phase corev1.PodPhase, image string, state corev1.ContainerState) *corev1.Pod {
		return &corev1.Pod{
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "other", Image: "localhost/other:1"}, {Name: "c", Image: image}}},
			Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", State: state}}},
		}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"short name", pod(corev1.PodPending, "busybox:1.36", waiting), "docker.io/library/busybox:1.36"},
		{"full name", pod(corev1.PodPending, "localhost/site/app:1", waiting), "localhost/site/app:1"},
		{"no status yet", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending}}, "docker.io/library/busybox:1.36"},
		{"not in the bundle", pod(corev1.PodPending, "busybox:1.37", waiting), ""},
		{"running", pod(corev1.PodRunning, "busybox:1.36", running), ""},
		{"started in a pending pod", pod(corev1.PodPending, "busybox:1.36", running), ""},
	} {
		if got := waitingFor(tc.pod, images); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
