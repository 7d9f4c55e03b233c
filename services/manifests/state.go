package manifests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What kubox keeps in the cluster per file: one ConfigMap in kube-system,
// so every box (and `kubox manifests ls`) sees what each file applied, and
// a box that restarts knows what to delete.
const (
	StateNamespace = "kube-system"
	// StateLabel marks the state ConfigMaps.
	StateLabel = "kubox.io/manifest-state"
	// FileLabel is set on every applied object to the hash of its file's
	// name, the same as on the file's state ConfigMap: kubox deletes only
	// objects that carry their file's label.
	FileLabel = "kubox.io/manifest-file"
	stateKey  = "state"
	// FieldManager is the server-side apply manager of every box.
	FieldManager = "kubox"
)

// State is what the cluster knows about one file (the same name on every
// box is the same file).
type State struct {
	File string `json:"file"`
	// SHA256 is the content last applied, by AppliedBy at AppliedAt.
	SHA256    string    `json:"sha256,omitempty"`
	AppliedBy string    `json:"appliedBy,omitempty"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
	// Objects are what the file applied (and any that could not be
	// deleted yet): what is deleted when they leave the file.
	Objects []Ref `json:"objects"`
	// Boxes are the boxes that hold the file now, with their copy's hash
	// and last error. The objects are deleted when the last one lets go.
	Boxes map[string]BoxState `json:"boxes"`
}

// BoxState is one box's copy of a file.
type BoxState struct {
	SHA256 string    `json:"sha256"`
	Error  string    `json:"error,omitempty"`
	Time   time.Time `json:"time"`
}

// FileID is the hash of a file name that names its state ConfigMap and
// labels its objects (a file name need not be a valid label value).
func FileID(file string) string {
	sum := sha256.Sum256([]byte(file))
	return hex.EncodeToString(sum[:])[:16]
}

// StateName is the name of file's state ConfigMap.
func StateName(file string) string { return "kubox-manifest-" + FileID(file) }

// Hash is the hex SHA-256 of a file's content.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// decodeState reads a state ConfigMap.
func decodeState(cm *corev1.ConfigMap) (State, error) {
	var st State
	if err := json.Unmarshal([]byte(cm.Data[stateKey]), &st); err != nil {
		return State{}, fmt.Errorf("state ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	if st.Boxes == nil {
		st.Boxes = map[string]BoxState{}
	}
	return st, nil
}

// encodeState writes st into cm.
func encodeState(cm *corev1.ConfigMap, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[stateKey] = string(b)
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[StateLabel] = "true"
	cm.Labels[FileLabel] = FileID(st.File)
	return nil
}

// FileState is one line of `kubox manifests ls`.
type FileState struct {
	State
	// Applied: every box holding the file applied it without error.
	Applied bool `json:"applied"`
	// Error is the first box's last error, "" when none.
	Error string `json:"error,omitempty"`
}

// List reads the state of every file from the cluster, by file name.
func List(ctx context.Context, client kubernetes.Interface) ([]FileState, error) {
	cms, err := client.CoreV1().ConfigMaps(StateNamespace).List(ctx, metav1.ListOptions{LabelSelector: StateLabel})
	if err != nil {
		return nil, fmt.Errorf("list the manifests' state ConfigMaps in %s: %w", StateNamespace, err)
	}
	var out []FileState
	for i := range cms.Items {
		st, err := decodeState(&cms.Items[i])
		if err != nil {
			return nil, err
		}
		fs := FileState{State: st, Applied: len(st.Boxes) > 0}
		for _, box := range slices.Sorted(maps.Keys(st.Boxes)) {
			b := st.Boxes[box]
			if b.Error != "" {
				fs.Applied = false
				if fs.Error == "" {
					fs.Error = box + ": " + b.Error
				}
			}
		}
		out = append(out, fs)
	}
	slices.SortFunc(out, func(a, b FileState) int { return strings.Compare(a.File, b.File) })
	return out, nil
}
