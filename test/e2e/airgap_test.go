package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"

	"github.com/kubox/kubox/test/harness"
)

const airgapDeployments = `apiVersion: apps/v1
kind: Deployment
metadata: {name: never, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: never}}
  template:
    metadata: {labels: {app: never}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ifnotpresent, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: ifnotpresent}}
  template:
    metadata: {labels: {app: ifnotpresent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/kubox-test/airgap:1
        imagePullPolicy: IfNotPresent
        readinessProbe: {httpGet: {path: /, port: 8081}, periodSeconds: 1}
`

type airgapImage struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Pinned bool   `json:"pinned"`
	Bundle string `json:"bundle"`
}

// TestAirgap is the air-gap story on one node: bundles built from local
// archives (signed) and from a registry on loopback; imported by the CLI
// and by dropping files into the images dir (a half-copied one only once
// complete); Deployments with imagePullPolicy Never and IfNotPresent; every
// bad bundle refused with nothing left in containerd; a restart that skips
// what was imported; and the kubelet's image GC, forced with tiny
// thresholds, removing an unpinned image but no pinned one.
func TestAirgap(t *testing.T) {
	env := harness.Require(t)
	for _, f := range []string{"busybox.tar", "airgap.tar"} {
		if _, err := os.Stat(filepath.Join(env.Images, f)); err != nil {
			t.Fatalf("test image %s missing (make test-images): %v", f, err)
		}
	}
	n := harness.NewNode(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	work := filepath.Join(n.Root, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(work, name) }
	kubox := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := n.Kubox(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sock := filepath.Join(n.RunDir, "containerd", "containerd.sock")
	ctr := func(t *testing.T, args ...string) string {
		t.Helper()
		return kubox(t, append([]string{"ctr", "--address", sock, "-n", "k8s.io"}, args...)...)
	}
	images := func(t *testing.T) []string {
		t.Helper()
		// Only the names: ctr may add warnings (cgroup v1) to its output.
		var l []string
		for _, line := range strings.Split(ctr(t, "images", "ls", "-q"), "\n") {
			if f := strings.Fields(line); len(f) == 1 && !strings.Contains(line, "=") {
				l = append(l, f[0])
			}
		}
		slices.Sort(l)
		return l
	}
	nodeFlags := []string{"--data-dir", n.DataDir, "--run-dir", n.RunDir, "--airgap-public-key-file", p("site.pub")}
	imagesDir := filepath.Join(n.DataDir, "images")
	manifest := p("deploy.yaml")

	var site bundleInfo
	harness.Phase(t, "keys-and-signed-bundle", func(t *testing.T) {
		// Keys and bundles, before any server runs.
		kubox(t, "airgap", "key", "create", p("site"))
		kubox(t, "airgap", "key", "create", p("other"))
		if fi, err := os.Stat(p("site.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("signing key mode: %v %v", fi.Mode(), err)
		}
		out := kubox(t, "airgap", "bundle", "create", "-o", p("site.kbundle"), "--sign-key", p("site.key"),
			"--from-archive", filepath.Join(env.Images, "busybox.tar"), "--from-archive", filepath.Join(env.Images, "airgap.tar"))
		t.Logf("bundle create:\n%s", out)
		if !strings.Contains(out, "added localhost/kubox-test/airgap:1") || !strings.Contains(out, "MB/s") {
			t.Errorf("bundle create printed no per-image progress:\n%s", out)
		}
		site = bundleLs(t, n, ctx, p("site.kbundle"), "--verify", "--airgap-public-key-file", p("site.pub"))
		if len(site.Images) != 2 || !site.Signed || !site.Verified {
			t.Fatalf("site bundle: %+v", site)
		}
		// Both images have one layer, the same: 2 manifests + 2 configs + 1 layer.
		if site.Blobs != 5 {
			t.Errorf("site bundle has %d blobs, want 5 (the shared layer once)", site.Blobs)
		}
	})

	var regRef, movingRef string
	var regB bundleInfo
	var regLayer, movingOld, movingNew v1.Hash
	harness.Phase(t, "registry-bundle", func(t *testing.T) {
		// A registry on loopback: bundle create pulls from it.
		reg := httptest.NewServer(registry.New())
		defer reg.Close()
		host := strings.TrimPrefix(reg.URL, "http://")
		regImage := randomImage(t, 3)
		regRef = host + "/kubox/rand:1"
		pushImage(t, regRef, regImage)
		// Signed: the server has a trusted key, so only signed bundles go in.
		kubox(t, "airgap", "bundle", "create", "-q", "-o", p("reg.kbundle"), "--sign-key", p("site.key"), regRef)
		kubox(t, "airgap", "bundle", "create", "-q", "-o", p("reg-unsigned.kbundle"), regRef)
		kubox(t, "airgap", "bundle", "create", "-q", "-o", p("reg-other.kbundle"), "--sign-key", p("other.key"), regRef)
		// One tag, two signed bundles a second apart (the manifest's
		// created time has seconds): the older holds the older image.
		movingRef = host + "/kubox/moving:1"
		for i, file := range []string{"moving-old.kbundle", "moving-new.kbundle"} {
			img := randomImage(t, 1)
			pushImage(t, movingRef, img)
			dg, _ := img.Digest()
			kubox(t, "airgap", "bundle", "create", "-q", "-o", p(file), "--sign-key", p("site.key"), movingRef)
			if i == 0 {
				movingOld = dg
				time.Sleep(1100 * time.Millisecond)
			} else {
				movingNew = dg
			}
		}
		regB = bundleLs(t, n, ctx, p("reg.kbundle"), "--verify")
		wantDigest, _ := regImage.Digest()
		if len(regB.Images) != 1 || regB.Images[0].Name != regRef || regB.Images[0].Digest != wantDigest.String() {
			t.Fatalf("registry bundle: %+v, want %s at %s", regB.Images, regRef, wantDigest)
		}
		regLayers, _ := regImage.Layers()
		regLayer, _ = regLayers[0].Digest()
	})

	controlRef := "localhost/kubox-test/unpinned:1"
	harness.Phase(t, "control-image", func(t *testing.T) {
		// An image imported the plain way, without the pinned label: the GC control.
		control := randomImage(t, 1)
		tag, _ := name.NewTag(controlRef)
		if err := tarball.WriteToFile(p("unpinned.tar"), tag, control); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "start", func(t *testing.T) {
		n.Args = append(n.Args, "--airgap-public-key-file", p("site.pub"))
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
	})

	harness.Phase(t, "import-by-cli", func(t *testing.T) {
		// Import by the CLI: per-image progress, signature verified, pinned.
		out := kubox(t, append([]string{"airgap", "import", p("site.kbundle")}, nodeFlags...)...)
		t.Logf("import:\n%s", out)
		for _, want := range []string{"imported localhost/kubox-test/busybox:1", "imported localhost/kubox-test/airgap:1", "MB/s", "signature verified"} {
			if !strings.Contains(out, want) {
				t.Errorf("import output lacks %q:\n%s", want, out)
			}
		}
		if out := kubox(t, append([]string{"airgap", "import", p("site.kbundle")}, nodeFlags...)...); !strings.Contains(out, "already imported") {
			t.Errorf("second import of the same bundle was not skipped:\n%s", out)
		}
		ls := airgapLs(t, n, ctx, nodeFlags)
		for _, want := range []string{"localhost/kubox-test/busybox:1", "localhost/kubox-test/airgap:1"} {
			if im, ok := ls[want]; !ok || !im.Pinned || im.Bundle != site.ID {
				t.Errorf("after import, %s: %+v (want pinned, from bundle %s)", want, im, site.ID)
			}
		}
	})

	harness.Phase(t, "deployments-roll-out", func(t *testing.T) {
		if err := os.WriteFile(manifest, []byte(airgapDeployments), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Kubectl(ctx, "apply", "-f", manifest); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"never", "ifnotpresent"} {
			if _, err := n.Kubectl(ctx, "rollout", "status", "deployment/"+d, "--timeout=120s"); err != nil {
				desc, _ := n.Kubectl(ctx, "describe", "pods", "-l", "app="+d)
				t.Fatalf("deployment %s: %v\n%s", d, err, desc)
			}
		}
	})

	var regData []byte
	var bad map[string][]byte
	harness.Phase(t, "bad-bundles-refused", func(t *testing.T) {
		// Bad bundles, by the CLI: refused in one line, file kept, nothing in
		// containerd (no image, not even the blobs).
		var err error
		regData, err = os.ReadFile(p("reg.kbundle"))
		if err != nil {
			t.Fatal(err)
		}
		bad = map[string][]byte{
			"truncated.kbundle": regData[:len(regData)*6/10],
			"mismatch.kbundle":  editBundle(t, regData, func(e []tarEntry) { big(e).data[100] ^= 0xff }),
			"absolute.kbundle":  editBundle(t, regData, func(e []tarEntry) { b := big(e); b.name = "/" + b.name }),
			"dotdot.kbundle":    editBundle(t, regData, func(e []tarEntry) { big(e).name = "blobs/sha256/../../../etc/x" }),
			"not-a-bundle.tar":  mustRead(t, filepath.Join(env.Images, "busybox.tar")),
			"other-key.kbundle": mustRead(t, p("reg-other.kbundle")),
			// Unsigned, with a trusted key configured and nothing else said.
			"unsigned.kbundle": mustRead(t, p("reg-unsigned.kbundle")),
		}
		wantErr := map[string]string{
			"truncated.kbundle": "truncated", "mismatch.kbundle": "digest mismatch", "absolute.kbundle": "unsafe path",
			"dotdot.kbundle": "unsafe path", "not-a-bundle.tar": "not a kubox image bundle", "other-key.kbundle": "signature does not verify",
			"unsigned.kbundle": "not signed",
		}
		before := images(t)
		for file, data := range bad {
			path := p(file)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := n.Kubox(ctx, append([]string{"airgap", "import", path}, nodeFlags...)...)
			if err == nil {
				t.Errorf("%s: imported", file)
				continue
			}
			msg := strings.TrimSpace(out)
			if strings.Count(msg, "\n") > 0 || !strings.Contains(msg, wantErr[file]) {
				t.Errorf("%s: want one line saying %q, got:\n%s", file, wantErr[file], msg)
			}
			if after := images(t); !slices.Equal(before, after) {
				t.Errorf("%s: containerd's images changed: %v -> %v", file, before, after)
			}
			if content := ctr(t, "content", "ls", "-q"); strings.Contains(content, regLayer.String()) {
				t.Errorf("%s: its layer %s is left in containerd's content store", file, regLayer)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: the bad file is gone: %v", file, err)
			}
		}
	})

	harness.Phase(t, "older-bundle-keeps-tag", func(t *testing.T) {
		// The newer bundle is imported; the older one, signed by the same
		// key, does not move the tag back unless asked to, and then says so.
		kubox(t, append([]string{"airgap", "import", "-q", p("moving-new.kbundle")}, nodeFlags...)...)
		if im := airgapLs(t, n, ctx, nodeFlags)[movingRef]; im.Digest != movingNew.String() {
			t.Fatalf("after the newer bundle, %s is %+v, want %s", movingRef, im, movingNew)
		}
		out, err := n.Kubox(ctx, append([]string{"airgap", "import", p("moving-old.kbundle")}, nodeFlags...)...)
		msg := strings.TrimSpace(out)
		if err == nil || strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "older") || !strings.Contains(msg, "--allow-downgrade") {
			t.Errorf("older bundle: want a one-line refusal naming --allow-downgrade, got err %v:\n%s", err, msg)
		}
		if im := airgapLs(t, n, ctx, nodeFlags)[movingRef]; im.Digest != movingNew.String() {
			t.Errorf("the older bundle moved %s to %s (want it kept at %s)", movingRef, im.Digest, movingNew)
		}
		out = kubox(t, append([]string{"airgap", "import", "-q", "--allow-downgrade", p("moving-old.kbundle")}, nodeFlags...)...)
		if !strings.Contains(out, "moved "+movingRef) || !strings.Contains(out, movingOld.String()) {
			t.Errorf("--allow-downgrade import did not say it moved the tag back:\n%s", out)
		}
		if im := airgapLs(t, n, ctx, nodeFlags)[movingRef]; im.Digest != movingOld.String() {
			t.Errorf("with --allow-downgrade, %s is %s, want %s", movingRef, im.Digest, movingOld)
		}
	})

	harness.Phase(t, "images-dir-watch", func(t *testing.T) {
		// The images dir: a bad file is logged and kept; a half-copied bundle is
		// not imported until the copy completes, then it is.
		if err := os.WriteFile(filepath.Join(imagesDir, "mismatch.kbundle"), bad["mismatch.kbundle"], 0o600); err != nil {
			t.Fatal(err)
		}
		dropped := filepath.Join(imagesDir, "reg.kbundle")
		half := len(regData) / 2
		if err := os.WriteFile(dropped, regData[:half], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			log, _ := os.ReadFile(n.LogPath)
			return strings.Contains(string(log), "mismatch.kbundle") && strings.Contains(string(log), "incomplete")
		}); err != nil {
			t.Fatalf("the watcher did not report the bad and the half-copied bundle: %v", err)
		}
		if got := images(t); slices.Contains(got, regRef) {
			t.Fatal("a half-copied bundle was imported")
		}
		f, err := os.OpenFile(dropped, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(regData[half:]); err != nil {
			t.Fatal(err)
		}
		f.Close()
		waitCtx, waitCancel := context.WithTimeout(ctx, 60*time.Second)
		err = harness.WaitFor(waitCtx, 200*time.Millisecond, func() bool { return slices.Contains(images(t), regRef) })
		waitCancel()
		if err != nil {
			t.Fatalf("the completed bundle in the images dir was not imported: %v", err)
		}
		if im := airgapLs(t, n, ctx, nodeFlags)[regRef]; !im.Pinned || im.Bundle != regB.ID {
			t.Errorf("dropped bundle's image: %+v", im)
		}
		for _, f := range []string{"mismatch.kbundle", "reg.kbundle"} {
			if _, err := os.Stat(filepath.Join(imagesDir, f)); err != nil {
				t.Errorf("%s removed from the images dir: %v", f, err)
			}
		}
	})

	harness.Phase(t, "restart-skips-imported", func(t *testing.T) {
		// Restart with the site bundle also in the images dir (imported by the
		// CLI, so recorded) and a file that is no bundle; tiny image GC
		// thresholds, no pods, and an unpinned image: the start skips the three
		// bundles (the corrupt copy of reg.kbundle has its ID, already
		// imported), refuses the other file, and image GC removes only the
		// unpinned image. The kubelet's periodic image GC first runs before its
		// disk stats are ready and then only every 5 minutes, so the eviction
		// manager (every 10 s) is made to reclaim the disk: it deletes unused
		// images through the same image GC manager, which skips pinned ones.
		siteCopy := filepath.Join(imagesDir, "site.kbundle")
		if err := os.WriteFile(siteCopy, mustRead(t, p("site.kbundle")), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(imagesDir, "not-a-bundle.tar"), bad["not-a-bundle.tar"], 0o600); err != nil {
			t.Fatal(err)
		}
		// As if copied a while ago: a file changed within the last seconds is
		// left to settle, and this check is about the skip.
		old := time.Now().Add(-time.Minute)
		for _, f := range []string{siteCopy, filepath.Join(imagesDir, "not-a-bundle.tar")} {
			if err := os.Chtimes(f, old, old); err != nil {
				t.Fatal(err)
			}
		}
		ctr(t, "images", "import", p("unpinned.tar"))
		if !slices.Contains(images(t), controlRef) {
			t.Fatalf("control image %s not imported: %v", controlRef, images(t))
		}
		if _, err := n.Kubectl(ctx, "delete", "-f", manifest, "--wait=true"); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 500*time.Millisecond, func() bool {
			out, err := n.Kubectl(ctx, "get", "pods", "-o", "name")
			return err == nil && strings.TrimSpace(out) == ""
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		logBefore := len(mustRead(t, n.LogPath))
		n.Args = append(n.Args, "--image-gc-high-threshold", "1", "--image-gc-low-threshold", "0", "--image-gc-min-age", "0s",
			"--test-eviction-hard", "imagefs.available=99%")
		restarted := time.Now()
		n.Start()
		if err := n.WaitNodeReadyFast(ctx, restarted); err != nil {
			t.Fatal(err)
		}
		// The images dir is checked in the background once the node is Ready.
		checked := waitLogLine(t, ctx, n, logBefore, `msg="images dir checked"`)
		t.Logf("start-time check: %s", checked)
		for _, want := range []string{"bundles=4", "imported=0", "skipped=3", "failed=1"} {
			if !strings.Contains(checked, want) {
				t.Errorf("start-time check: want %s in %q", want, checked)
			}
		}
	})

	harness.Phase(t, "image-gc-spares-pinned", func(t *testing.T) {
		gcCtx, gcCancel := context.WithTimeout(ctx, 3*time.Minute)
		err := harness.WaitFor(gcCtx, time.Second, func() bool { return !slices.Contains(images(t), controlRef) })
		gcCancel()
		if err != nil {
			t.Fatalf("the kubelet's image GC did not remove the unpinned image %s (so pinning is not shown): %v; images: %v", controlRef, err, images(t))
		}
		after := images(t)
		for _, want := range []string{"localhost/kubox-test/busybox:1", "localhost/kubox-test/airgap:1", regRef} {
			if !slices.Contains(after, want) {
				t.Errorf("image GC removed the pinned image %s: %v", want, after)
			}
		}
		if _, err := n.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

type bundleInfo struct {
	ID       string `json:"id"`
	Signed   bool   `json:"signed"`
	Verified bool   `json:"verified"`
	Blobs    int    `json:"blobs"`
	Images   []struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	} `json:"images"`
}

func bundleLs(t *testing.T, n *harness.Node, ctx context.Context, file string, args ...string) bundleInfo {
	t.Helper()
	out, err := n.Kubox(ctx, append([]string{"airgap", "bundle", "ls", "-o", "json", file}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var b bundleInfo
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("bundle ls -o json: %v\n%s", err, out)
	}
	return b
}

func airgapLs(t *testing.T, n *harness.Node, ctx context.Context, flags []string) map[string]airgapImage {
	t.Helper()
	out, err := n.Kubox(ctx, append([]string{"airgap", "ls", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	var l []airgapImage
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("airgap ls -o json: %v\n%s", err, out)
	}
	m := map[string]airgapImage{}
	for _, i := range l {
		m[i.Name] = i
	}
	return m
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(256<<10, layers)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// waitLogLine waits for a line of the node's log, from byte offset from on,
// matching re, and returns it.
func waitLogLine(t *testing.T, ctx context.Context, n *harness.Node, from int, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re + ".*")
	var line string
	if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
		line = rx.FindString(string(mustRead(t, n.LogPath)[from:]))
		return line != ""
	}); err != nil {
		t.Fatalf("no log line %q: %v", re, err)
	}
	return line
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type tarEntry struct {
	name string
	data []byte
}

// big is the largest entry: a layer.
func big(es []tarEntry) *tarEntry {
	b := &es[0]
	for i := range es {
		if len(es[i].data) > len(b.data) {
			b = &es[i]
		}
	}
	return b
}

// editBundle decompresses a bundle, lets edit change its entries, and packs
// them again: a bundle that is well-formed zstd and tar but wrong inside.
func editBundle(t *testing.T, data []byte, edit func([]tarEntry)) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var es []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		es = append(es, tarEntry{name: hdr.Name, data: b})
	}
	edit(es)
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
