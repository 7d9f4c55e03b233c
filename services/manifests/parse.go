package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// IsManifest reports whether a file name in the manifests dir is one kubox
// applies: .yaml, .yml or .json, and not hidden (editors' swap and backup
// files start with a dot).
func IsManifest(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// Parse reads the objects of one file: YAML documents separated by ---, or
// JSON objects; a List (v1 List, or any *List kind with items) is
// flattened into its items. Empty documents are skipped. Objects come back
// in apply order: Namespaces first, then CustomResourceDefinitions, then
// the rest in file order, so a CR follows its CRD.
func Parse(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			err := u.EachListItem(func(o runtime.Object) error {
				item, ok := o.(*unstructured.Unstructured)
				if !ok {
					return fmt.Errorf("list item of type %T", o)
				}
				objs = append(objs, item)
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", doc, err)
			}
			continue
		}
		objs = append(objs, u)
	}
	seen := map[Ref]bool{}
	for i, o := range objs {
		if o.GetAPIVersion() == "" || o.GetKind() == "" {
			return nil, fmt.Errorf("object %d: apiVersion and kind are required", i+1)
		}
		if o.GetName() == "" {
			return nil, fmt.Errorf("object %d (%s): metadata.name is required (generateName cannot be applied)", i+1, o.GetKind())
		}
		r := RefOf(o)
		if seen[r] {
			return nil, fmt.Errorf("object %d: %s appears twice", i+1, r)
		}
		seen[r] = true
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return applyRank(a) - applyRank(b) })
	return objs, nil
}

// applyRank orders what others need first.
func applyRank(o *unstructured.Unstructured) int {
	gk := o.GroupVersionKind().GroupKind()
	switch gk {
	case schema.GroupKind{Kind: "Namespace"}:
		return 0
	case schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:
		return 1
	}
	return 2
}

// Ref names one applied object. The version is kept to find its resource
// again but is not part of its identity: a file that moves an object from
// v1beta1 to v1 still holds the same object.
type Ref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// RefOf is o's reference, with its namespace as written.
func RefOf(o *unstructured.Unstructured) Ref {
	return Ref{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}
}

// GroupKind is r's group and kind.
func (r Ref) GroupKind() schema.GroupKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind).GroupKind()
}

// key is r's identity: group, kind, namespace, name.
func (r Ref) key() string {
	gk := r.GroupKind()
	return gk.Group + "/" + gk.Kind + "/" + r.Namespace + "/" + r.Name
}

func (r Ref) String() string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

// Removed lists the objects of prev that next no longer holds, in delete
// order: the reverse of apply order, so CRs go before their CRD and
// namespaced objects before their Namespace.
func Removed(prev, next []Ref) []Ref {
	keep := make(map[string]bool, len(next))
	for _, r := range next {
		keep[r.key()] = true
	}
	var out []Ref
	for _, r := range prev {
		if !keep[r.key()] {
			out = append(out, r)
		}
	}
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b Ref) int { return refRank(b) - refRank(a) })
	return out
}

func refRank(r Ref) int {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(r.APIVersion)
	u.SetKind(r.Kind)
	return applyRank(u)
}

// Union is a followed by the refs of b that a lacks.
func Union(a, b []Ref) []Ref {
	out := slices.Clone(a)
	have := make(map[string]bool, len(a))
	for _, r := range a {
		have[r.key()] = true
	}
	for _, r := range b {
		if !have[r.key()] {
			have[r.key()] = true
			out = append(out, r)
		}
	}
	return out
}
