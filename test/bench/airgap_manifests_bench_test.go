package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

const benchSiteDeploy = `apiVersion: apps/v1
kind: Deployment
metadata: {name: bench-site, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: bench-site}}
  template:
    metadata: {labels: {app: bench-site}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: localhost/kubox-test/busybox:1
        imagePullPolicy: Never
`

// BenchmarkAirgapManifests: the time from a bundle carrying an image and a
// Deployment (3 replicas, pull policy Never) renamed into the images dir
// of a Ready node to all of the Deployment's pods Running. The figure
// includes the watcher's settle time (a file is read once it has been left
// alone for 2 s), printed beside it.
func BenchmarkAirgapManifests(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		n := harness.NewNode(b, env)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		work := filepath.Join(n.Root, "bench")
		app := filepath.Join(work, "app")
		if err := os.MkdirAll(app, 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(app, "deploy.yaml"), []byte(benchSiteDeploy), 0o600); err != nil {
			b.Fatal(err)
		}
		bundle := filepath.Join(work, "site.kbundle")
		if out, err := n.Kubox(ctx, "airgap", "bundle", "create", "-q", "-o", bundle,
			"--from-archive", filepath.Join(env.Images, "busybox.tar"), "--manifests", app, "--name", "bench-site"); err != nil {
			b.Fatalf("bundle create: %v\n%s", err, out)
		}
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			b.Fatal(err)
		}
		images := filepath.Join(n.DataDir, "images")
		if err := os.MkdirAll(images, 0o700); err != nil {
			b.Fatal(err)
		}
		tmp := filepath.Join(images, ".site.kbundle")
		if err := os.WriteFile(tmp, readFile(b, bundle), 0o600); err != nil {
			b.Fatal(err)
		}
		dropped := time.Now()
		if err := os.Rename(tmp, filepath.Join(images, "site.kbundle")); err != nil {
			b.Fatal(err)
		}
		err := harness.WaitFor(ctx, 100*time.Millisecond, func() bool {
			out, err := n.Kubectl(ctx, "get", "pods", "-l", "app=bench-site", "-o", "jsonpath={.items[*].status.phase}")
			return err == nil && strings.Count(out, "Running") == 3
		})
		if err != nil {
			n.DumpLog(40)
			b.Fatalf("the bundle's pods never ran: %v", err)
		}
		report(b, "bundle dropped to its 3 pods Running", float64(time.Since(dropped).Milliseconds())/1000, "s")
		report(b, "images dir settle time, included above", 2, "s")
		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
