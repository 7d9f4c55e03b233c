package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/test/harness"
)

type etcdMember struct {
	Name    string `json:"name"`
	Learner bool   `json:"learner"`
}

// members lists etcd's members as seen from n.
func members(ctx context.Context, t *testing.T, n *harness.Node) []etcdMember {
	t.Helper()
	out, err := n.Kubox(ctx, "etcd", "members", "--data-dir", n.DataDir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ms []etcdMember
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("etcd members -o json: %v: %s", err, out)
	}
	return ms
}

// describe renders members as "box1=voter,box2=learner" in etcd's order, sorted.
func describe(ms []etcdMember) string {
	var parts []string
	for _, m := range ms {
		role := "voter"
		if m.Learner {
			role = "learner"
		}
		parts = append(parts, m.Name+"="+role)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// cgroupRoot keeps each box's pod cgroups apart: a kubelet deletes the pod
// cgroups it does not know about.
func cgroupRoot(box string) string {
	return "--kubelet-cgroup-root=/" + harness.CgroupRootPrefix + box
}

func boxArgs(name, ip string, extra ...string) []string {
	return append([]string{"--node-name", name, "--node-ip", ip}, extra...)
}

// refusedJoin starts a join that must be refused, and checks the one line
// it printed and that it left nothing behind on the joining box.
func refusedJoin(ctx context.Context, t *testing.T, env harness.Env, ns, ip, want string, setup func(n *harness.Node), args ...string) {
	t.Helper()
	n := harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, append(boxArgs("joiner", ip, "--disable-agent"), args...)...)
	n.Netns = ns
	if setup != nil {
		setup(n)
	}
	n.Start()
	done, err := n.WaitExit(90 * time.Second)
	if !done {
		n.DumpLog(50)
		t.Fatalf("join (%s) was not refused within 90s", want)
	}
	if err == nil {
		t.Fatalf("join (%s) exited 0", want)
	}
	log, _ := os.ReadFile(n.LogPath)
	if !strings.Contains(string(log), want) {
		t.Fatalf("join refusal: want a line with %q, got:\n%s", want, log)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	t.Logf("refused as expected: %s", lines[len(lines)-1])
	if ok, _ := exists(filepath.Join(n.DataDir, "etcd", "member")); ok {
		t.Errorf("refused join left an etcd member dir in %s", n.DataDir)
	}
	if ok, _ := exists(filepath.Join(n.DataDir, "join.json")); ok {
		t.Errorf("refused join left join.json")
	}
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if os.IsNotExist(err) {
		return false, nil
	}
	return false, err
}

func configMapCount(ctx context.Context, n *harness.Node, ns string) (int, error) {
	out, err := n.Kubectl(ctx, "get", "configmaps", "-n", ns, "-o", "name")
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(out)), nil
}

// TestJoinThreeBoxes is the multi-box story on three "hosts" (network
// namespaces on a bridge): a refused join for every kind of bad input with
// nothing added to etcd, box 2 joining as a learner, box 3 joining as a voter
// (box 2 promoted), its single-use token then deleted and refused, no key
// at rest in etcd or in a Secret, the cluster surviving box 1's SIGKILL (served by box 2,
// whose apiserver started while it was a learner, and box 3) and then box
// 2's, with every acknowledged write readable and the killed box catching
// up, node remove, and a join refused while etcd has no quorum.
//
// Every box runs the whole stack, its kubelet under its own pod cgroup root.
func TestJoinThreeBoxes(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxe2e", 3)
	ns, ip := network.Namespaces, network.IPs
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")

	box1 := harness.NewNode(t, env, boxArgs("box1", ip[0], cgroupRoot("box1"))...)
	box1.Netns = ns[0]
	harness.Phase(t, "box1-ready", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
	})

	var tok string
	var parsed bootstrap.Token
	harness.Phase(t, "token", func(t *testing.T) {
		tok = createToken(ctx, t, box1, "1h")
		parsed, _ = bootstrap.ParseToken(tok)
		list, err := box1.Kubox(ctx, "token", "list", "--data-dir", box1.DataDir)
		if err != nil || !strings.Contains(list, parsed.ID) || strings.Contains(list, parsed.Secret) {
			t.Fatalf("token list should show id %s and never the secret: %v\n%s", parsed.ID, err, list)
		}
	})

	// Bad input: each refused with one line, no etcd member added.
	harness.Phase(t, "refusals", func(t *testing.T) {
		wrongHash := parsed
		wrongHash.CAHash = strings.Repeat("ab", 32)
		wrongSecret := parsed
		wrongSecret.Secret = "0123456789abcdef"
		expired := createToken(ctx, t, box1, "1s")
		deleted := createToken(ctx, t, box1, "1h")
		delTok, _ := bootstrap.ParseToken(deleted)
		if _, err := box1.Kubox(ctx, "token", "delete", "--data-dir", box1.DataDir, delTok.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		refusedJoin(ctx, t, env, ns[1], ip[1], "not a kubox join token", nil, "--join", joinURL, "--token", "K10nonsense")
		refusedJoin(ctx, t, env, ns[1], ip[1], "CA hash mismatch", nil, "--join", joinURL, "--token", wrongHash.String())
		refusedJoin(ctx, t, env, ns[1], ip[1], "refused the token", func(n *harness.Node) {
			n.Env = []string{"KUBOX_TOKEN=" + wrongSecret.String()}
		}, "--join", joinURL)
		refusedJoin(ctx, t, env, ns[1], ip[1], "refused the token", nil, "--join", joinURL, "--token", expired)
		refusedJoin(ctx, t, env, ns[1], ip[1], "refused the token", nil, "--join", joinURL, "--token", deleted)
		// A box that already has another cluster's PKI.
		refusedJoin(ctx, t, env, ns[1], ip[1], "already belongs to another cluster", func(n *harness.Node) {
			_, svc, _ := net.ParseCIDR("10.43.0.0/16")
			if _, err := bootstrap.Ensure(ctx, bootstrap.Config{
				Dir: filepath.Join(n.DataDir, "pki"), KubeconfigDir: filepath.Join(n.DataDir, "kubeconfig"),
				NodeName: "joiner", NodeIPs: []net.IP{net.ParseIP(ip[1])}, ServiceCIDR: svc,
				APIServerURL: "https://127.0.0.1:6443",
			}); err != nil {
				t.Fatal(err)
			}
		}, "--join", joinURL, "--token", tok)
		if got := describe(members(ctx, t, box1)); got != "box1=voter" {
			t.Fatalf("after refused joins etcd has %s, want box1=voter", got)
		}
	})

	// Box 2: the token from the environment; joins as a learner.
	box2 := harness.NewNode(t, env, boxArgs("box2", ip[1], cgroupRoot("box2"), "--join", joinURL)...)
	box2.Netns, box2.Env = ns[1], []string{"KUBOX_TOKEN=" + tok}
	harness.Phase(t, "box2-joins-as-learner", func(t *testing.T) {
		begin := time.Now()
		startBox(ctx, t, box2)
		t.Logf("box2 joined and its apiserver is ready in %s", time.Since(begin).Round(time.Millisecond))
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=learner" {
			t.Fatalf("after box2's join etcd has %s, want box1=voter,box2=learner", got)
		}
		// The learner's own etcd answers no membership calls; the verbs fall
		// back to the members it joined.
		if got := describe(members(ctx, t, box2)); got != "box1=voter,box2=learner" {
			t.Fatalf("etcd members through the learner box2: %s", got)
		}
		if out, err := box1.Kubox(ctx, "etcd", "promote", "box1", "--data-dir", box1.DataDir); err == nil || !strings.Contains(out, "already a voter") {
			t.Errorf("etcd promote of a voter: %v %s", err, out)
		}
		if log, _ := os.ReadFile(box2.LogPath); !strings.Contains(string(log), "non-voting etcd learner") {
			t.Errorf("box2 did not say it joined as a learner")
		}
		if log, _ := os.ReadFile(box2.LogPath); strings.Contains(string(log), parsed.Secret) {
			t.Errorf("box2's log contains the token secret")
		}
		// Single use: box2, once up, deletes the token and its sealed bundle.
		waitTokenGone(ctx, t, box1, tok)
	})

	// No CA key, sa.key or encryption key in etcd or in any Secret.
	harness.Phase(t, "no-keys-at-rest", func(t *testing.T) {
		noKeysAtRest(ctx, t, box1, ip[0])
	})

	harness.Phase(t, "used-token-refused", func(t *testing.T) {
		refusedJoin(ctx, t, env, ns[2], ip[2], "refused the token", nil, "--join", joinURL, "--token", tok)
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=learner" {
			t.Fatalf("after the refused join etcd has %s, want box1=voter,box2=learner", got)
		}
	})

	// Box 3: join and token from its config file; joins as a voter and box2
	// is promoted.
	box3 := harness.NewNode(t, env, boxArgs("box3", ip[2], cgroupRoot("box3"))...)
	box3.Netns = ns[2]
	// Runs first among the cleanups: no kubelet may still run while the
	// boxes' host cleanups remove pod cgroups.
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})
	harness.Phase(t, "box3-joins-box2-promoted", func(t *testing.T) {
		cfgFile := filepath.Join(box3.Root, "config.yaml")
		tok3 := createToken(ctx, t, box1, "1h")
		if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf("join: %s\ntoken: %s\n", joinURL, tok3)), 0o600); err != nil {
			t.Fatal(err)
		}
		box3.Args = append(box3.Args, "--config", cfgFile)
		startBox(ctx, t, box3)
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter,box3=voter" {
			t.Fatalf("after box3's join etcd has %s, want three voters", got)
		}
	})

	harness.Phase(t, "three-nodes-ready", func(t *testing.T) {
		// Three nodes Ready, seen through each box's own apiserver.
		for _, b := range []*harness.Node{box1, box2, box3} {
			var out string
			var err error
			deadline := time.Now().Add(2 * time.Minute)
			for {
				out, err = b.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
				if err == nil && strings.TrimSpace(out) == "box1=True box2=True box3=True" || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Second)
			}
			if strings.TrimSpace(out) != "box1=True box2=True box3=True" {
				t.Fatalf("kubectl get nodes through %s: %v %q, want three Ready nodes", b.Netns, err, out)
			}
		}
	})

	harness.Phase(t, "pod-to-pod", func(t *testing.T) {
		// A pod on box 1 reaches a pod on box 3 by its pod IP.
		podToPod(ctx, t, box1, box3)
	})

	harness.Phase(t, "configmaps", func(t *testing.T) {
		// 200 ConfigMaps through box 1.
		if _, err := box1.Kubectl(ctx, "create", "namespace", "load"); err != nil {
			t.Fatal(err)
		}
		var manifest strings.Builder
		for i := range 200 {
			fmt.Fprintf(&manifest, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%03d, namespace: load}\ndata: {i: \"%d\"}\n", i, i)
		}
		mf := filepath.Join(box1.Root, "cms.yaml")
		if err := os.WriteFile(mf, []byte(manifest.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := box1.Kubectl(ctx, "apply", "-f", mf); err != nil {
			t.Fatal(err)
		}
	})

	want := 200 // ConfigMaps in namespace load, counting acknowledged writes
	harness.Phase(t, "box1-killed", func(t *testing.T) {
		// Box 2's apiserver started while box 2 was a learner, and was not
		// restarted since its promotion: it follows the membership through its
		// etcd proxy.
		if log, _ := os.ReadFile(box2.LogPath); !strings.Contains(string(log), "this box's member is a voter") {
			t.Errorf("box2's etcd proxy did not switch to its own member after the promotion")
		}
		// SIGKILL box 1 (the first member, likely etcd's leader): box 2 and
		// box 3 keep serving writes and reads.
		box1.Kill()
		want += len(writesWhileDown(ctx, t, "box1-down", box2, box3))
	})
	harness.Phase(t, "box1-back", func(t *testing.T) {
		startBox(ctx, t, box1)
		waitConfigMaps(ctx, t, want, box1)
	})

	harness.Phase(t, "box2-killed", func(t *testing.T) {
		// SIGKILL box 2; keep writing through box 3.
		box2.Kill()
		acked := writesWhileDown(ctx, t, "box2-down", box3)
		want += len(acked)
		for _, b := range []*harness.Node{box1, box3} {
			out, err := b.Kubectl(ctx, "get", "configmaps", "-n", "load", "-o", "name")
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range acked {
				if !strings.Contains(out, "configmap/"+name+"\n") {
					t.Fatalf("acknowledged write %s not readable through %s", name, b.Netns)
				}
			}
		}
	})
	harness.Phase(t, "box2-back", func(t *testing.T) {
		// Box 2 comes back (same args, so --join again: it must just restart).
		startBox(ctx, t, box2)
		waitConfigMaps(ctx, t, want, box1, box2, box3)
		if got := describe(members(ctx, t, box2)); got != "box1=voter,box2=voter,box3=voter" {
			t.Fatalf("after box2's restart etcd has %s", got)
		}
	})

	var tok2 string
	harness.Phase(t, "node-remove", func(t *testing.T) {
		// A second token for the quorum-loss case below, made while writes work.
		tok2 = createToken(ctx, t, box1, "1h")

		// node remove box3: two voters, healthy cluster; box3's kubox stops.
		if out, err := box1.Kubox(ctx, "node", "remove", "box3", "--data-dir", box1.DataDir, "--node-name", "box1"); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("%s", strings.TrimSpace(out))
		}
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter" {
			t.Fatalf("after node remove etcd has %s, want box1=voter,box2=voter", got)
		}
		if done, _ := box3.WaitExit(60 * time.Second); !done {
			t.Errorf("box3's kubox still runs a minute after its removal")
		} else if log, _ := os.ReadFile(box3.LogPath); !strings.Contains(string(log), "etcd member was removed from the cluster") {
			t.Errorf("box3 did not say that it was removed")
		}
		for i, b := range []*harness.Node{box1, box2} {
			if _, err := b.Kubectl(ctx, "create", "configmap", "-n", "load", fmt.Sprintf("after-remove-%d", i)); err != nil {
				t.Fatalf("write through %s after node remove: %v", b.Netns, err)
			}
		}
		if out, err := box1.Kubox(ctx, "node", "remove", "box1", "--data-dir", box1.DataDir, "--node-name", "box1"); err == nil {
			t.Errorf("node remove of the box itself succeeded: %s", out)
		}
	})

	harness.Phase(t, "join-refused-without-quorum", func(t *testing.T) {
		// No quorum: box 2 down, box 1 alone of two voters. A join is refused
		// and adds no member.
		box2.Kill()
		refusedJoin(ctx, t, env, ns[2], ip[2], "quorum", nil, "--join", joinURL, "--token", tok2)
		// Back without --join or token: a joined box (join.json) still starts
		// its apiserver behind the etcd proxy.
		box2.Args, box2.Env = slices.DeleteFunc(slices.Clone(box2.Args), func(a string) bool { return a == "--join" || a == joinURL }), nil
		before, _ := os.ReadFile(box2.LogPath)
		startBox(ctx, t, box2)
		if log, _ := os.ReadFile(box2.LogPath); !strings.Contains(string(log[len(before):]), "etcd proxy: apiserver's etcd backend") {
			t.Errorf("box2 restarted without --join does not reach etcd through its etcd proxy")
		}
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter" {
			t.Fatalf("after the join without quorum etcd has %s, want box1=voter,box2=voter", got)
		}
	})
}

const podTemplate = `apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
`

// podToPod runs a web pod on to and checks that a pod on from fetches its
// page by pod IP, across the boxes' pod routes.
func podToPod(ctx context.Context, t *testing.T, from, to *harness.Node) {
	t.Helper()
	for _, n := range []*harness.Node{from, to} {
		if err := n.ImportImage(ctx, "busybox.tar"); err != nil {
			t.Fatal(err)
		}
	}
	manifest := fmt.Sprintf(podTemplate, "web-far", "box3") + "---\n" + fmt.Sprintf(podTemplate, "client-near", "box1")
	applyWebAndClient(ctx, t, from, manifest)
	ip, err := from.Kubectl(ctx, "get", "pod", "web-far", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	// busybox-static's wget crashes (static glibc), so plain HTTP over nc.
	out, err := from.Kubectl(ctx, "exec", "client-near", "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 `+ip+` 8080`)
	if err != nil || !strings.Contains(out, "kubox-test ok") {
		t.Fatalf("pod on box1 fetching http://%s:8080/ on box3: %q %v", ip, out, err)
	}
	// No NAT between pods on the host-route path either.
	assertPeer(ctx, t, from, "client-near", "web-far", ip, 8080, podIP(ctx, t, from, "client-near"), "")
	t.Logf("pod on box1 reached pod %s on box3", ip)
}

// writesWhileDown creates ConfigMaps in namespace load for 8 s, in turn
// through each of boxes, and checks that every acknowledged one is readable
// through each of them. It returns the acknowledged names.
func writesWhileDown(ctx context.Context, t *testing.T, prefix string, boxes ...*harness.Node) []string {
	t.Helper()
	var acked []string
	failures := 0
	end := time.Now().Add(8 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		name := fmt.Sprintf("%s-%04d", prefix, i)
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := boxes[i%len(boxes)].Kubectl(wctx, "create", "configmap", "-n", "load", name, "--from-literal=i="+name)
		wcancel()
		if err == nil {
			acked = append(acked, name)
		} else {
			failures++
		}
	}
	t.Logf("%s: %d writes acknowledged, %d failed", prefix, len(acked), failures)
	if len(acked) == 0 {
		t.Fatalf("%s: no write succeeded", prefix)
	}
	for _, b := range boxes {
		out, err := b.Kubectl(ctx, "get", "configmaps", "-n", "load", "-o", "name")
		if err != nil {
			t.Fatalf("%s: read through %s: %v", prefix, b.Netns, err)
		}
		for _, name := range acked {
			if !strings.Contains(out, "configmap/"+name+"\n") {
				t.Fatalf("%s: acknowledged write %s not readable through %s", prefix, name, b.Netns)
			}
		}
	}
	return acked
}

// waitConfigMaps waits up to a minute for each of boxes to see want
// ConfigMaps in namespace load (besides kube-root-ca.crt).
func waitConfigMaps(ctx context.Context, t *testing.T, want int, boxes ...*harness.Node) {
	t.Helper()
	for _, b := range boxes {
		var got int
		var err error
		deadline := time.Now().Add(time.Minute)
		for {
			got, err = configMapCount(ctx, b, "load")
			if (err == nil && got >= want+1) || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got != want+1 {
			t.Fatalf("%s sees %d ConfigMaps in load, want %d (+kube-root-ca.crt): %v", b.Netns, got, want, err)
		}
	}
}

// createToken makes a join token on b with `kubox token create` and checks
// that what it printed parses.
func createToken(ctx context.Context, t *testing.T, b *harness.Node, ttl string) string {
	t.Helper()
	out, err := b.Kubox(ctx, "token", "create", "--data-dir", b.DataDir, "--ttl", ttl, "--description", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	if _, err := bootstrap.ParseToken(tok); err != nil {
		t.Fatalf("token create printed %q: %v", tok, err)
	}
	return tok
}

// startBoxNodeReady starts b's kubox server and waits up to 3 minutes for
// its Node to be Ready.
func startBoxNodeReady(ctx context.Context, t *testing.T, b *harness.Node) {
	t.Helper()
	b.Start()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := b.WaitNodeReady(wctx); err != nil {
		t.Fatal(err)
	}
}

// startBox starts b's kubox server and waits up to 3 minutes for its apiserver.
func startBox(ctx context.Context, t *testing.T, b *harness.Node) {
	t.Helper()
	b.Start()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := b.WaitAPIReady(wctx); err != nil {
		t.Fatal(err)
	}
}

// applyWebAndClient applies manifest (pods web-far and client-near) through
// n and waits for both to be Ready.
func applyWebAndClient(ctx context.Context, t *testing.T, n *harness.Node, manifest string) {
	t.Helper()
	mf := filepath.Join(n.Root, "pods.yaml")
	if err := os.WriteFile(mf, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", mf); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/web-far", "pod/client-near", "--timeout=120s"); err != nil {
		out, _ := n.Kubectl(ctx, "get", "pods", "-o", "wide")
		t.Fatalf("%v\n%s", err, out)
	}
}
