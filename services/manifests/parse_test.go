package manifests

import (
	"slices"
	"strings"
	"testing"
)

func TestIsManifest(t *testing.T) {
	for name, want := range map[string]bool{
		"app.yaml": true, "app.yml": true, "app.json": true, "APP.YAML": true,
		".app.yaml.swp": false, ".app.yaml": false, "app.yaml~": false, "app.txt": false, "README": false,
	} {
		if got := IsManifest(name); got != want {
			t.Errorf("IsManifest(%q) = %v, want %v", name, got, want)
		}
	}
}

func kinds(t *testing.T, data string) []string {
	t.Helper()
	objs, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

// Documents, Lists and JSON come out as objects, namespaces and CRDs first.
func TestParseOrder(t *testing.T) {
	got := kinds(t, `
# a comment-only document
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
- {apiVersion: v1, kind: Namespace, metadata: {name: ns}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
---
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
`)
	want := []string{"Namespace/ns", "CustomResourceDefinition/widgets.example.com", "Widget/w", "ConfigMap/a", "Secret/s"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := kinds(t, `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}`); !slices.Equal(got, []string{"ConfigMap/a"}) {
		t.Errorf("JSON file: %v", got)
	}
	if got := kinds(t, "# nothing\n"); len(got) != 0 {
		t.Errorf("empty file: %v", got)
	}
}

func TestParseRejects(t *testing.T) {
	for name, c := range map[string]struct{ data, want string }{
		"syntax":     {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n", "document 1"},
		"no kind":    {"apiVersion: v1\nmetadata: {name: a}\n", "apiVersion and kind"},
		"no name":    {"apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: a-}\n", "metadata.name"},
		"twice":      {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "twice"},
		"second doc": {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [\n", "document 2"},
	} {
		_, err := Parse([]byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.want)
		}
	}
}

func TestRemoved(t *testing.T) {
	ns := Ref{APIVersion: "v1", Kind: "Namespace", Name: "app"}
	crd := Ref{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "widgets.example.com"}
	cr := Ref{APIVersion: "example.com/v1", Kind: "Widget", Namespace: "app", Name: "w"}
	cm := Ref{APIVersion: "v1", Kind: "ConfigMap", Namespace: "app", Name: "a"}
	cmOther := Ref{APIVersion: "v1", Kind: "ConfigMap", Namespace: "other", Name: "a"}
	deployBeta := Ref{APIVersion: "apps/v1beta1", Kind: "Deployment", Namespace: "app", Name: "d"}
	deploy := Ref{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "app", Name: "d"}

	prev := []Ref{ns, crd, cr, cm, deployBeta}
	for name, c := range map[string]struct {
		next, want []Ref
	}{
		"unchanged":          {next: prev, want: nil},
		"one object removed": {next: []Ref{ns, crd, cr, deployBeta}, want: []Ref{cm}},
		// A new version of the same kind is the same object.
		"version changed": {next: []Ref{ns, crd, cr, cm, deploy}, want: nil},
		// Another namespace is another object.
		"namespace changed": {next: []Ref{ns, crd, cr, cmOther, deploy}, want: []Ref{cm}},
		// The file emptied: CRs before their CRD, everything before the Namespace.
		"all removed": {next: nil, want: []Ref{deployBeta, cm, cr, crd, ns}},
	} {
		if got := Removed(prev, c.next); !slices.Equal(got, c.want) {
			t.Errorf("%s: removed %v, want %v", name, got, c.want)
		}
	}
}

func TestUnion(t *testing.T) {
	a := Ref{APIVersion: "v1", Kind: "ConfigMap", Namespace: "x", Name: "a"}
	b := Ref{APIVersion: "v1", Kind: "ConfigMap", Namespace: "x", Name: "b"}
	if got := Union([]Ref{a}, []Ref{b, a}); !slices.Equal(got, []Ref{a, b}) {
		t.Errorf("union %v", got)
	}
}

func TestFileID(t *testing.T) {
	id := FileID("my app.yaml")
	if len(id) != 16 || id == FileID("my-app.yaml") {
		t.Errorf("file id %q", id)
	}
	if name := StateName("my app.yaml"); len(name) > 63 || !strings.HasPrefix(name, "kubox-manifest-") {
		t.Errorf("state name %q", name)
	}
}

func TestReapply(t *testing.T) {
	held := func(boxes ...string) map[string]BoxState {
		m := map[string]BoxState{}
		for _, b := range boxes {
			m[b] = BoxState{}
		}
		return m
	}
	for name, c := range map[string]struct {
		st   State
		ok   bool
		want bool
	}{
		"no state in the cluster":        {ok: false, want: true},
		"this box's record lost":         {st: State{SHA256: "h", AppliedBy: "b2", Boxes: held("b2")}, ok: true, want: true},
		"this copy applied last":         {st: State{SHA256: "h", AppliedBy: "b1", Boxes: held("b1", "b2")}, ok: true, want: false},
		"same content applied by other":  {st: State{SHA256: "h", AppliedBy: "b2", Boxes: held("b1", "b2")}, ok: true, want: false},
		"other copy, other still holds":  {st: State{SHA256: "x", AppliedBy: "b2", Boxes: held("b1", "b2")}, ok: true, want: false},
		"other copy, other let go":       {st: State{SHA256: "x", AppliedBy: "b2", Boxes: held("b1")}, ok: true, want: true},
		"never applied (every copy bad)": {st: State{Boxes: held("b1")}, ok: true, want: false},
	} {
		if got := reapply(c.st, c.ok, "b1", "h"); got != c.want {
			t.Errorf("%s: reapply %v, want %v", name, got, c.want)
		}
	}
}
