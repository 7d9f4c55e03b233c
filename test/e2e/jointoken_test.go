package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kubox/kubox/bootstrap"
	"github.com/kubox/kubox/test/harness"
)

// secretsAtRest are what no API object may hold: any PEM private key and
// the secrets-at-rest key of b's encryption config (as configured, base64,
// and raw).
func secretsAtRest(t *testing.T, b *harness.Node) [][]byte {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(b.DataDir, "pki", "encryption-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	needles := [][]byte{[]byte("PRIVATE KEY"), []byte("EncryptionConfiguration")}
	keys := regexp.MustCompile(`secret: (\S+)`).FindAllSubmatch(cfg, -1)
	if len(keys) == 0 {
		t.Fatalf("no key found in %s", cfg)
	}
	for _, m := range keys {
		raw, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		needles = append(needles, m[1], raw)
	}
	return needles
}

// noKeysAtRest checks that neither etcd's whole keyspace (read with b's
// own etcd client certificate, in b's network namespace) nor any Secret
// read through the API holds a private key or the encryption key.
func noKeysAtRest(ctx context.Context, t *testing.T, b *harness.Node, ip string) {
	t.Helper()
	needles := secretsAtRest(t, b)
	dir := filepath.Join(b.DataDir, "pki", "etcd")
	tlsCfg, err := (&transport.TLSInfo{
		CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"),
		TrustedCAFile: filepath.Join(dir, "server-ca.crt"),
	}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	dial := harness.DialContext(t, b.Netns)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://" + net.JoinHostPort(ip, "2379")}, TLS: tlsCfg, DialTimeout: 10 * time.Second,
		Logger: zap.NewNop(), DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := cli.Get(gctx, "", clientv3.WithPrefix())
	cancel()
	if err != nil {
		t.Fatalf("read etcd's keyspace: %v", err)
	}
	if len(resp.Kvs) < 100 {
		t.Fatalf("etcd's keyspace has only %d keys: not the cluster's", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		for _, n := range needles {
			if bytes.Contains(kv.Value, n) {
				t.Errorf("etcd key %s holds %q", kv.Key, firstBytes(n))
			}
		}
	}
	t.Logf("scanned %d etcd keys: no private key, no encryption key", len(resp.Kvs))

	out, err := b.Kubectl(ctx, "get", "secrets", "-A", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kubox-join") {
		t.Fatalf("kubectl get secrets -A shows no kubox-join:\n%s", out)
	}
	// Data is base64 in YAML: decode every value before looking.
	for _, m := range regexp.MustCompile(`(?m)^\s+(\S+): ([A-Za-z0-9+/=]{16,})$`).FindAllStringSubmatch(out, -1) {
		v, err := base64.StdEncoding.DecodeString(m[2])
		if err != nil {
			continue
		}
		for _, n := range needles {
			if bytes.Contains(v, n) {
				t.Errorf("a Secret's %s holds %q", m[1], firstBytes(n))
			}
		}
	}
}

// firstBytes shows a needle without printing a whole key.
func firstBytes(b []byte) string {
	if len(b) > 12 {
		return string(b[:6]) + "..."
	}
	return string(b)
}

// tokenListed says whether `kubox token list` on b shows id.
func tokenListed(ctx context.Context, t *testing.T, b *harness.Node, id string) bool {
	t.Helper()
	out, err := b.Kubox(ctx, "token", "list", "--data-dir", b.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(out, id)
}

// waitTokenGone waits up to a minute for the single-use token tok to be
// deleted with its sealed bundle after the join that used it.
func waitTokenGone(ctx context.Context, t *testing.T, b *harness.Node, tok string) {
	t.Helper()
	parsed, _ := bootstrap.ParseToken(tok)
	deadline := time.Now().Add(time.Minute)
	for tokenListed(ctx, t, b, parsed.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("single-use token %s still listed a minute after the join", parsed.ID)
		}
		time.Sleep(time.Second)
	}
	out, err := b.Kubectl(ctx, "-n", "kube-system", "get", "secret", "kubox-join", "-o", "go-template={{range $k, $v := .data}}{{$k}} {{end}}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "token."+parsed.ID) || strings.Contains(out, ".key") {
		t.Fatalf("kubox-join keeps %q after the join", out)
	}
}

// TestJoinConcurrent starts box 2 and box 3 with --join at the same moment,
// with one --reusable token: one of them waits for the other's etcd learner
// to be promoted, then joins; both become Ready nodes, etcd has three
// voters, and the reusable token is still there.
func TestJoinConcurrent(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxcc", 3)
	ns, ip := network.Namespaces, network.IPs
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
	boxes := make([]*harness.Node, 3)
	for i := range boxes {
		name := "box" + string(rune('1'+i))
		args := boxArgs(name, ip[i], cgroupRoot(name))
		if i > 0 {
			args = append(args, "--join", joinURL)
		}
		boxes[i] = harness.NewNode(t, env, args...)
		boxes[i].Netns = ns[i]
	}
	box1, box2, box3 := boxes[0], boxes[1], boxes[2]
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})
	harness.Phase(t, "box1-ready", func(t *testing.T) {
		startBoxNodeReady(ctx, t, box1)
	})
	var tok string
	harness.Phase(t, "reusable-token", func(t *testing.T) {
		out, err := box1.Kubox(ctx, "token", "create", "--data-dir", box1.DataDir, "--reusable")
		if err != nil {
			t.Fatal(err)
		}
		tok = strings.TrimSpace(out)
		if _, err := bootstrap.ParseToken(tok); err != nil {
			t.Fatalf("token create --reusable printed %q: %v", tok, err)
		}
	})
	harness.Phase(t, "box2-and-box3-join-at-once", func(t *testing.T) {
		box2.Env, box3.Env = []string{"KUBOX_TOKEN=" + tok}, []string{"KUBOX_TOKEN=" + tok}
		box2.Start()
		box3.Start()
		wctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
		defer cancel()
		for _, b := range []*harness.Node{box2, box3} {
			if err := b.WaitNodeReady(wctx); err != nil {
				b.DumpLog(30)
				t.Fatalf("%s: %v", b.Netns, err)
			}
		}
		var got string
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got = describe(members(ctx, t, box1))
			if got == "box1=voter,box2=voter,box3=voter" || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if got != "box1=voter,box2=voter,box3=voter" {
			t.Fatalf("after both joins etcd has %s, want three voters", got)
		}
		waited := false
		for _, b := range []*harness.Node{box2, box3} {
			if log, _ := os.ReadFile(b.LogPath); strings.Contains(string(log), "waiting until its etcd learner is promoted") {
				t.Logf("%s waited for the other box's learner", b.Netns)
				waited = true
			}
		}
		if !waited {
			t.Logf("neither box had to wait: their member adds did not overlap")
		}
	})
	harness.Phase(t, "reusable-token-kept", func(t *testing.T) {
		parsed, _ := bootstrap.ParseToken(tok)
		if !tokenListed(ctx, t, box1, parsed.ID) {
			t.Fatalf("the reusable token %s was deleted after the joins", parsed.ID)
		}
		noKeysAtRest(ctx, t, box1, ip[0])
	})
}
