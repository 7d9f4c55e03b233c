package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const manifestsApp = `apiVersion: v1
kind: Namespace
metadata: {name: mf-app}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: mf-app}
data: {k: v1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two, namespace: mf-app}
data: {k: x}
`

// A CRD followed by its CR, and a List, in one file.
const manifestsCRD = `{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-list"}, "data": {"k": "v"}}]}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.kubox.test}
spec:
  group: kubox.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

const manifestsCR = `apiVersion: kubox.test/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
`

// TestManifestsDir: files dropped in the manifests dir are applied within
// seconds, follow the file's changes, go with the file, a broken file
// raises a Warning Event without holding back the others, and a restart
// deletes what was removed from a file meanwhile but re-applies the rest.
func TestManifestsDir(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--node-name", "mf1", "--disable-agent", "--disable-dns")
	dir := n.ManifestsDir
	write := func(t *testing.T, name, content string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// As an operator's tools should: a temp file renamed in place.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	get := func(args ...string) (string, error) {
		return n.Kubectl(ctx, append([]string{"get"}, args...)...)
	}
	// within waits up to d for cond, and says how long it took.
	within := func(t *testing.T, d time.Duration, what string, cond func() bool) {
		t.Helper()
		begin := time.Now()
		wctx, wcancel := context.WithTimeout(ctx, d)
		defer wcancel()
		if err := harness.WaitFor(wctx, 200*time.Millisecond, cond); err != nil {
			t.Fatalf("%s: not within %s", what, d)
		}
		t.Logf("%s after %s", what, time.Since(begin).Round(100*time.Millisecond))
	}
	gone := func(args ...string) func() bool {
		return func() bool {
			_, err := get(args...)
			return err != nil && strings.Contains(err.Error(), "NotFound")
		}
	}
	value := func(want string, args ...string) func() bool {
		return func() bool {
			out, err := get(append(args, "-o", "jsonpath={.data.k}")...)
			return err == nil && out == want
		}
	}
	ls := func(t *testing.T) map[string]map[string]any {
		t.Helper()
		out, err := n.Kubox(ctx, "manifests", "ls", "--data-dir", n.DataDir, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var files []map[string]any
		if err := json.Unmarshal([]byte(out), &files); err != nil {
			t.Fatalf("manifests ls -o json: %v: %s", err, out)
		}
		m := map[string]map[string]any{}
		for _, f := range files {
			m[f["file"].(string)] = f
		}
		return m
	}

	n.Start()
	harness.Phase(t, "api-ready", func(t *testing.T) {
		if err := n.WaitAPIReady(ctx); err != nil {
			t.Fatal(err)
		}
	})
	harness.Phase(t, "files-dropped-in", func(t *testing.T) {
		write(t, "app.yaml", manifestsApp)
		write(t, "crd.yaml", manifestsCRD+"---\n"+manifestsCR)
		within(t, 5*time.Second, "app.yaml's ConfigMap", value("v1", "configmap", "-n", "mf-app", "one"))
		within(t, 5*time.Second, "the list's ConfigMap", value("v", "configmap", "-n", "default", "from-list"))
		within(t, 30*time.Second, "the CR after its CRD", func() bool { _, err := get("widget", "-n", "default", "w1"); return err == nil })
		out, err := get("configmap", "-n", "mf-app", "one", "-o", "jsonpath={.metadata.managedFields[*].manager}")
		if err != nil || !strings.Contains(out, "kubox") {
			t.Errorf("field managers %q (%v), want kubox", out, err)
		}
	})
	harness.Phase(t, "field-changed", func(t *testing.T) {
		write(t, "app.yaml", strings.Replace(manifestsApp, "v1}", "v2}", 1))
		within(t, 5*time.Second, "the changed field", value("v2", "configmap", "-n", "mf-app", "one"))
	})
	harness.Phase(t, "object-removed-from-file", func(t *testing.T) {
		app := strings.Replace(manifestsApp, "v1}", "v2}", 1)
		write(t, "app.yaml", app[:strings.LastIndex(app, "---")])
		within(t, 5*time.Second, "the removed object deleted", gone("configmap", "-n", "mf-app", "two"))
		if _, err := get("configmap", "-n", "mf-app", "one"); err != nil {
			t.Errorf("an object still in the file went: %v", err)
		}
	})
	harness.Phase(t, "broken-file", func(t *testing.T) {
		write(t, "broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n")
		write(t, "other.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {k: o}\n")
		within(t, 5*time.Second, "the file after the broken one", value("o", "configmap", "-n", "default", "other"))
		within(t, 10*time.Second, "a Warning Event", func() bool {
			out, err := get("events", "-n", "kube-system", "--field-selector", "type=Warning,reason=ManifestFailed", "-o", "jsonpath={.items[*].message}")
			return err == nil && strings.Contains(out, "broken.yaml")
		})
		files := ls(t)
		if f := files["broken.yaml"]; f == nil || f["applied"] != false || f["error"] == nil {
			t.Errorf("ls: broken.yaml %v, want not applied with an error", f)
		}
		if f := files["app.yaml"]; f == nil || f["applied"] != true || len(f["objects"].([]any)) != 2 {
			t.Errorf("ls: app.yaml %v, want applied with 2 objects", f)
		}
		text, err := n.Kubox(ctx, "manifests", "ls", "--data-dir", n.DataDir)
		if err != nil || !strings.Contains(text, "broken.yaml") {
			t.Errorf("manifests ls: %v: %s", err, text)
		}
		t.Logf("kubox manifests ls:\n%s", text)
		// Over a resync (10 s) the broken file is not tried, logged or
		// recorded again: one line.
		time.Sleep(11 * time.Second)
		log, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if c := strings.Count(string(log), "broken.yaml"); c != 1 {
			t.Errorf("the broken file is in %d log lines, want 1", c)
		}
	})
	harness.Phase(t, "restart", func(t *testing.T) {
		if _, err := n.Kubectl(ctx, "delete", "configmap", "-n", "default", "other"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Stop(time.Minute); err != nil {
			t.Fatalf("stop: %v", err)
		}
		// While kubox is down: one object leaves app.yaml.
		write(t, "app.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: mf-app}\n")
		n.Start()
		if err := n.WaitAPIReady(ctx); err != nil {
			t.Fatal(err)
		}
		within(t, 30*time.Second, "the object removed while down deleted", gone("configmap", "-n", "mf-app", "one"))
		within(t, 30*time.Second, "a present file re-applied", value("o", "configmap", "-n", "default", "other"))
		if _, err := get("widget", "-n", "default", "w1"); err != nil {
			t.Errorf("the CR went over a restart: %v", err)
		}
	})
	harness.Phase(t, "file-deleted", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "crd.yaml")); err != nil {
			t.Fatal(err)
		}
		within(t, 10*time.Second, "the removed file's CRD deleted", gone("crd", "widgets.kubox.test"))
		within(t, 5*time.Second, "the removed file's ConfigMap deleted", gone("configmap", "-n", "default", "from-list"))
		files := ls(t)
		if _, ok := files["crd.yaml"]; ok {
			t.Errorf("ls still lists crd.yaml: %v", files["crd.yaml"])
		}
		if _, ok := files["other.yml"]; !ok {
			t.Errorf("ls lost other.yml: %v", files)
		}
	})
}

// TestManifestsTwoBoxes: each box applies its own files; two boxes holding
// the same file do not fight (identical copies change nothing, different
// copies are last writer wins and stay so), and the file's objects go
// with its last holder.
func TestManifestsTwoBoxes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxmf", 2)
	ns, ip := network.Namespaces, network.IPs
	boxes := make([]*harness.Node, 2)
	for i := range boxes {
		extra := []string{"--disable-agent", "--disable-dns"}
		if i > 0 {
			extra = append(extra, "--join", "https://"+net.JoinHostPort(ip[0], "6443"))
		}
		boxes[i] = harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, boxArgs(fmt.Sprintf("box%d", i+1), ip[i], extra...)...)
		boxes[i].Netns = ns[i]
	}
	box1, box2 := boxes[0], boxes[1]
	t.Cleanup(func() { box2.Kill(); box1.Kill() })
	cm := func(name, value string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: default}\ndata: {k: \"%s\"}\n", name, value)
	}
	write := func(t *testing.T, b *harness.Node, name, content string) {
		t.Helper()
		if err := os.MkdirAll(b.ManifestsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.ManifestsDir, "."+name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(b.ManifestsDir, "."+name), filepath.Join(b.ManifestsDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	field := func(path string, args ...string) string {
		out, err := box1.Kubectl(ctx, append(append([]string{"get"}, args...), "-o", "jsonpath="+path)...)
		if err != nil {
			return "error: " + err.Error()
		}
		return out
	}
	wait := func(t *testing.T, d time.Duration, what string, cond func() bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, d)
		defer wcancel()
		if err := harness.WaitFor(wctx, 300*time.Millisecond, cond); err != nil {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
	value := func(name string) string { return field("{.data.k}", "configmap", "-n", "default", name) }
	// stable checks that the shared ConfigMap is not written over a whole
	// resync of both boxes.
	stable := func(t *testing.T) {
		t.Helper()
		before := field("{.metadata.resourceVersion}", "configmap", "-n", "default", "shared")
		time.Sleep(12 * time.Second)
		if after := field("{.metadata.resourceVersion}", "configmap", "-n", "default", "shared"); after != before {
			t.Errorf("the shared ConfigMap was written again (resourceVersion %s -> %s): the boxes fight", before, after)
		}
	}

	harness.Phase(t, "two-boxes", func(t *testing.T) {
		write(t, box1, "shared.yaml", cm("shared", "a"))
		write(t, box1, "only1.yaml", cm("one", "1"))
		write(t, box2, "shared.yaml", cm("shared", "a"))
		write(t, box2, "only2.yaml", cm("two", "2"))
		startBox(ctx, t, box1)
		box2.Env = []string{"KUBOX_TOKEN=" + createToken(ctx, t, box1, "1h")}
		startBox(ctx, t, box2)
		wait(t, 30*time.Second, "every box's files applied", func() bool {
			return value("one") == "1" && value("two") == "2" && value("shared") == "a"
		})
		out, err := box2.Kubox(ctx, "manifests", "ls", "--data-dir", box2.DataDir)
		if err != nil || !strings.Contains(out, "box1,box2") {
			t.Errorf("manifests ls on box2: %v:\n%s\nwant shared.yaml held by box1,box2", err, out)
		}
		t.Logf("kubox manifests ls:\n%s", out)
	})
	harness.Phase(t, "identical-copies", stable)
	harness.Phase(t, "different-copies", func(t *testing.T) {
		write(t, box2, "shared.yaml", cm("shared", "b"))
		wait(t, 5*time.Second, "box2's copy applied", func() bool { return value("shared") == "b" })
		stable(t)
		if v := value("shared"); v != "b" {
			t.Errorf("shared %q, want b (the last writer's)", v)
		}
	})
	harness.Phase(t, "last-writer-lets-go", func(t *testing.T) {
		if err := os.Remove(filepath.Join(box2.ManifestsDir, "shared.yaml")); err != nil {
			t.Fatal(err)
		}
		wait(t, 20*time.Second, "box1's copy applied again", func() bool { return value("shared") == "a" })
	})
	harness.Phase(t, "last-holder-lets-go", func(t *testing.T) {
		if err := os.Remove(filepath.Join(box1.ManifestsDir, "shared.yaml")); err != nil {
			t.Fatal(err)
		}
		wait(t, 5*time.Second, "the shared ConfigMap deleted", func() bool { return strings.Contains(value("shared"), "NotFound") })
		if value("one") != "1" || value("two") != "2" {
			t.Errorf("the other files' objects went: one %q, two %q", value("one"), value("two"))
		}
	})
}
