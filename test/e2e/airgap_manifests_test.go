package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// The site application of TestAirgapManifests: a Deployment whose image
// comes only from the bundle (pull policy Never), and a ConfigMap that the
// second version of the bundle no longer has.
const (
	siteDeploy = `apiVersion: apps/v1
kind: Deployment
metadata: {name: site-web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: site-web}}
  template:
    metadata: {labels: {app: site-web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
`
	siteConfig = `apiVersion: v1
kind: ConfigMap
metadata: {name: site-extra, namespace: default}
data: {k: v}
`
)

// TestAirgapManifests: one signed bundle carries a site application
// (images and manifests). Dropped into the images dir of a fresh box, the
// application runs with no other step; a second version of the bundle
// without one object deletes it; a bundle whose manifest was changed after
// signing is refused and applies nothing; bad manifests dirs are refused
// at create time in one line.
func TestAirgapManifests(t *testing.T) {
	env := harness.Require(t)
	if _, err := os.Stat(filepath.Join(env.Images, "busybox.tar")); err != nil {
		t.Fatalf("test image busybox.tar missing (make test-images): %v", err)
	}
	n := harness.NewNode(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := filepath.Join(n.Root, "work")
	p := func(name string) string { return filepath.Join(work, name) }
	for _, d := range []string{"app1", "app2", "empty", "broken"} {
		if err := os.MkdirAll(p(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(t *testing.T, path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubox := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := n.Kubox(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	imagesDir := filepath.Join(n.DataDir, "images")
	// drop copies a bundle into the images dir as an operator's tools
	// should: a hidden temp name renamed into place.
	drop := func(t *testing.T, src, name string) {
		t.Helper()
		if err := os.MkdirAll(imagesDir, 0o700); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(imagesDir, "."+name)
		write(t, tmp, string(mustRead(t, src)))
		if err := os.Rename(tmp, filepath.Join(imagesDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	create := func(t *testing.T, out, dir string) (string, error) {
		return n.Kubox(ctx, "airgap", "bundle", "create", "-o", out, "--sign-key", p("site.key"),
			"--from-archive", filepath.Join(env.Images, "busybox.tar"), "--manifests", dir, "--name", "site")
	}

	harness.Phase(t, "bundles", func(t *testing.T) {
		kubox(t, "airgap", "key", "create", p("site"))
		write(t, filepath.Join(p("app1"), "deploy.yaml"), siteDeploy)
		write(t, filepath.Join(p("app1"), "config.yaml"), siteConfig)
		write(t, filepath.Join(p("app2"), "deploy.yaml"), siteDeploy)
		out, err := create(t, p("site-1.kbundle"), p("app1"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("bundle create:\n%s", out)
		if !strings.Contains(out, "added manifest site/deploy.yaml") || !strings.Contains(out, "2 manifests") {
			t.Errorf("bundle create did not list its manifests:\n%s", out)
		}
		// The manifest's created time has seconds: the second version is
		// later, so the first one becomes a downgrade.
		time.Sleep(1100 * time.Millisecond)
		if _, err := create(t, p("site-2.kbundle"), p("app2")); err != nil {
			t.Fatal(err)
		}
		// bundle ls lists the application's files.
		ls := kubox(t, "airgap", "bundle", "ls", "-o", "json", p("site-1.kbundle"), "--verify", "--airgap-public-key-file", p("site.pub"))
		var b struct {
			App       string `json:"app"`
			Verified  bool   `json:"verified"`
			Manifests []struct {
				Name string `json:"name"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal([]byte(ls), &b); err != nil {
			t.Fatalf("bundle ls -o json: %v\n%s", err, ls)
		}
		if b.App != "site" || !b.Verified || len(b.Manifests) != 2 {
			t.Fatalf("bundle ls: %s", ls)
		}

		// Bad manifests dirs: one line each, non-zero exit, no bundle.
		write(t, filepath.Join(p("broken"), "bad.yaml"), "apiVersion: v1\nkind: [\n")
		for dir, want := range map[string]string{
			p("missing"): "does not exist", p("empty"): "holds no .yaml", p("broken"): "bad.yaml does not parse",
		} {
			out, err := create(t, p("bad.kbundle"), dir)
			if err == nil || !strings.Contains(out, want) {
				t.Errorf("create with --manifests %s: %v, want %q:\n%s", dir, err, want, out)
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n"); lines > 0 {
				t.Errorf("create with --manifests %s said more than one line:\n%s", dir, out)
			}
		}
		if _, err := os.Stat(p("bad.kbundle")); !os.IsNotExist(err) {
			t.Errorf("a refused create left a bundle: %v", err)
		}
	})

	n.Args = append(n.Args, "--airgap-public-key-file", p("site.pub"))
	n.Start()
	harness.Phase(t, "node-ready", func(t *testing.T) {
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "tampered-manifest-refused", func(t *testing.T) {
		// The Deployment's image changed after signing (same length, the
		// listing fixed up to match): the signature no longer verifies.
		data := editBundle(t, mustRead(t, p("site-1.kbundle")), func(es []tarEntry) {
			var deploy []byte
			for i := range es {
				if es[i].name == "manifests/deploy.yaml" {
					es[i].data = bytes.Replace(es[i].data, []byte("kubox-test/busybox:1"), []byte("kubox-evil/busybox:1"), 1)
					deploy = es[i].data
				}
			}
			if deploy == nil {
				t.Fatal("no manifests/deploy.yaml in the bundle")
			}
			var m map[string]any
			if err := json.Unmarshal(es[0].data, &m); err != nil {
				t.Fatal(err)
			}
			for _, f := range m["manifests"].([]any) {
				if f := f.(map[string]any); f["name"] == "deploy.yaml" {
					f["digest"] = digestOf(deploy)
				}
			}
			es[0].data, _ = json.Marshal(m)
		})
		write(t, p("tampered.kbundle"), string(data))
		from := len(mustRead(t, n.LogPath))
		drop(t, p("tampered.kbundle"), "tampered.kbundle")
		line := waitLogLine(t, ctx, n, from, `bundle not imported.*tampered`)
		if !strings.Contains(line, "signature does not verify") {
			t.Errorf("tampered bundle refused for another reason: %s", line)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "airgap", "manifests", "site")); !os.IsNotExist(err) {
			t.Errorf("the tampered bundle installed its application: %v", err)
		}
	})

	harness.Phase(t, "bundle-runs-the-application", func(t *testing.T) {
		drop(t, p("site-1.kbundle"), "site-1.kbundle")
		// No other step: the Deployment appears and becomes available
		// with its image from the bundle.
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err := n.Kubectl(ctx, "get", "deployment/site-web")
			return err == nil
		}); err != nil {
			n.DumpLog(40)
			t.Fatalf("the bundle's Deployment never appeared: %v", err)
		}
		if _, err := n.Kubectl(ctx, "rollout", "status", "deployment/site-web", "--timeout=180s"); err != nil {
			desc, _ := n.Kubectl(ctx, "describe", "pods", "-l", "app=site-web")
			t.Fatalf("deployment site-web: %v\n%s", err, desc)
		}
		policy, err := n.Kubectl(ctx, "get", "pods", "-l", "app=site-web", "-o", "jsonpath={.items[0].spec.containers[0].imagePullPolicy}")
		if err != nil || policy != "Never" {
			t.Errorf("pod's pull policy %q (%v), want Never", policy, err)
		}
		if _, err := n.Kubectl(ctx, "get", "configmap/site-extra"); err != nil {
			t.Errorf("the bundle's ConfigMap: %v", err)
		}
		ls := kubox(t, "manifests", "ls", "--data-dir", n.DataDir)
		if !strings.Contains(ls, "site/deploy.yaml") || !strings.Contains(ls, "site/config.yaml") {
			t.Errorf("manifests ls does not show the application's files:\n%s", ls)
		}
	})

	harness.Phase(t, "second-version-deletes-what-it-dropped", func(t *testing.T) {
		drop(t, p("site-2.kbundle"), "site-2.kbundle")
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err := n.Kubectl(ctx, "get", "configmap/site-extra")
			return err != nil && strings.Contains(err.Error(), "NotFound")
		}); err != nil {
			n.DumpLog(40)
			t.Fatalf("the ConfigMap the second bundle dropped was not deleted: %v", err)
		}
		if _, err := n.Kubectl(ctx, "rollout", "status", "deployment/site-web", "--timeout=60s"); err != nil {
			t.Errorf("deployment site-web after the second bundle: %v", err)
		}
		ls := kubox(t, "manifests", "ls", "--data-dir", n.DataDir)
		if strings.Contains(ls, "site/config.yaml") {
			t.Errorf("manifests ls still shows the dropped file:\n%s", ls)
		}
	})

	nodeFlags := []string{"--data-dir", n.DataDir, "--run-dir", n.RunDir, "--airgap-public-key-file", p("site.pub")}
	harness.Phase(t, "cli-import-downgrade", func(t *testing.T) {
		// The first version again, by the CLI: refused as older than the
		// installed one, then installed on purpose.
		out, err := n.Kubox(ctx, append([]string{"airgap", "import", "--force", p("site-1.kbundle")}, nodeFlags...)...)
		if err == nil || !strings.Contains(out, "application site") || !strings.Contains(out, "older than the one installed") {
			t.Fatalf("downgrade by the CLI: %v\n%s", err, out)
		}
		out = kubox(t, append([]string{"airgap", "import", "--force", "--allow-downgrade", p("site-1.kbundle")}, nodeFlags...)...)
		if !strings.Contains(out, "installed application site") {
			t.Errorf("import --allow-downgrade:\n%s", out)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err := n.Kubectl(ctx, "get", "configmap/site-extra")
			return err == nil
		}); err != nil {
			t.Fatalf("the first version's ConfigMap did not come back: %v", err)
		}
	})

	harness.Phase(t, "remove-the-application", func(t *testing.T) {
		// The bundle file going changes nothing; the application's dir
		// going deletes its objects.
		for _, f := range []string{"site-1.kbundle", "site-2.kbundle"} {
			if err := os.Remove(filepath.Join(imagesDir, f)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(3 * time.Second) // past the watcher's settle time and a poll of the applier
		if _, err := n.Kubectl(ctx, "get", "deployment/site-web"); err != nil {
			t.Fatalf("removing the bundle files removed the application: %v", err)
		}
		if err := os.RemoveAll(filepath.Join(n.DataDir, "airgap", "manifests", "site")); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err1 := n.Kubectl(ctx, "get", "deployment/site-web")
			_, err2 := n.Kubectl(ctx, "get", "configmap/site-extra")
			return err1 != nil && strings.Contains(err1.Error(), "NotFound") && err2 != nil && strings.Contains(err2.Error(), "NotFound")
		}); err != nil {
			t.Fatalf("the removed application's objects stay: %v", err)
		}
	})
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
