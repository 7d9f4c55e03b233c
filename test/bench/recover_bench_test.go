package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// BenchmarkEtcdRecover measures `kubox etcd recover` on the learner of a
// two-box cluster (control plane only, 500 ConfigMaps) whose voter box 1
// was SIGKILLed: the command itself, and from its start to the recovered
// box's apiserver serving again.
func BenchmarkEtcdRecover(b *testing.B) {
	env := harness.Require(b)
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		network := harness.NewNetwork(b, "kbxbrc", 2)
		ns, ip := network.Namespaces, network.IPs
		boxes := make([]*harness.Node, 2)
		for j := range boxes {
			boxes[j] = harness.NewNodeWith(b, env, harness.NodeOptions{NoHostRestore: true},
				"--node-name", fmt.Sprintf("box%d", j+1), "--node-ip", ip[j], "--disable-agent")
			boxes[j].Netns = ns[j]
		}
		box1, box2 := boxes[0], boxes[1]
		box1.Start()
		if err := box1.WaitAPIReady(ctx); err != nil {
			b.Fatal(err)
		}
		out, err := box1.Kubox(ctx, "token", "create", "--data-dir", box1.DataDir)
		if err != nil {
			b.Fatal(err)
		}
		box2.Args = append(box2.Args, "--join", "https://"+net.JoinHostPort(ip[0], "6443"))
		box2.Env = []string{"KUBOX_TOKEN=" + strings.TrimSpace(out)}
		box2.Start()
		if err := box2.WaitAPIReady(ctx); err != nil {
			b.Fatal(err)
		}
		var list strings.Builder
		list.WriteString("apiVersion: v1\nkind: List\nitems:\n")
		for j := range writeCount {
			fmt.Fprintf(&list, "- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm-%04d, namespace: default}, data: {i: \"%d\"}}\n", j, j)
		}
		mf := filepath.Join(box1.Root, "configmaps.yaml")
		if err := os.WriteFile(mf, []byte(list.String()), 0o600); err != nil {
			b.Fatal(err)
		}
		if _, err := box1.Kubectl(ctx, "apply", "-f", mf); err != nil {
			b.Fatal(err)
		}
		if err := harness.WaitFor(ctx, 200*time.Millisecond, func() bool {
			_, err := box2.Kubectl(ctx, "get", "configmap", fmt.Sprintf("cm-%04d", writeCount-1))
			return err == nil
		}); err != nil {
			b.Fatal(err)
		}
		box1.Kill()
		if _, err := box2.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		begin := time.Now()
		if out, err := box2.Kubox(ctx, "etcd", "recover", "-q", "--data-dir", box2.DataDir, "--node-name", "box2", "--node-ip", ip[1]); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		report(b, "etcd recover (learner, 500 ConfigMaps)", float64(time.Since(begin).Milliseconds()), "ms")
		box2.Start()
		if err := box2.WaitAPIReady(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := box2.Kubectl(ctx, "create", "configmap", "after-recover"); err != nil {
			b.Fatal(err)
		}
		report(b, "etcd recover to a write on the recovered box", time.Since(begin).Seconds(), "s")
		cancel()
	}
}
