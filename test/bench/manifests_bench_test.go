package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubox/kubox/test/harness"
)

// BenchmarkManifests measures the time from a file written (renamed) into
// the manifests dir to its objects existing: ten one-object files one after
// the other (median and worst), then one file of 100 ConfigMaps. The dir is
// polled every second, so a single file takes up to about 1 s plus the apply.
func BenchmarkManifests(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		n := harness.NewNode(b, env, "--disable-agent", "--disable-dns")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		n.Start()
		if err := n.WaitAPIReady(ctx); err != nil {
			b.Fatal(err)
		}
		client, err := n.Client()
		if err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(n.ManifestsDir, 0o700); err != nil {
			b.Fatal(err)
		}
		// applied writes name and waits for ConfigMap last to exist.
		applied := func(name, content, last string) time.Duration {
			tmp := filepath.Join(n.ManifestsDir, "."+name)
			if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
				b.Fatal(err)
			}
			begin := time.Now()
			if err := os.Rename(tmp, filepath.Join(n.ManifestsDir, name)); err != nil {
				b.Fatal(err)
			}
			err := harness.WaitFor(ctx, 20*time.Millisecond, func() bool {
				_, err := client.CoreV1().ConfigMaps("default").Get(ctx, last, metav1.GetOptions{})
				return err == nil
			})
			if err != nil {
				b.Fatalf("%s: ConfigMap %s never appeared", name, last)
			}
			return time.Since(begin)
		}
		cm := func(name string) string {
			return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: default}\ndata: {k: v}\n---\n", name)
		}
		var one []time.Duration
		for f := 0; f < 10; f++ {
			name := fmt.Sprintf("one-%d", f)
			one = append(one, applied(name+".yaml", cm(name), name))
		}
		slices.Sort(one)
		var many strings.Builder
		for o := 0; o < 100; o++ {
			many.WriteString(cm(fmt.Sprintf("many-%d", o)))
		}
		hundred := applied("many.yaml", many.String(), "many-99")
		report(b, "manifest file written to object, median", one[len(one)/2].Seconds(), "s")
		report(b, "manifest file written to object, worst of 10", one[len(one)-1].Seconds(), "s")
		report(b, "file of 100 ConfigMaps written to the last", hundred.Seconds(), "s")
		cancel()
		if _, err := n.Stop(time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
