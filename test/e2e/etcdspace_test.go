package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubox/kubox/test/harness"
)

// spaceQuota is the test's etcd quota: small enough to fill in a minute
// with ConfigMaps of bigValue.
const (
	spaceQuota = 32 << 20
	bigValue   = 900 << 10
)

// TestEtcdSpace fills etcd to NOSPACE with a small quota (etcd-quota-bytes):
// big ConfigMaps written and deleted again (their history fills the
// database until compaction) beside ConfigMaps that must survive.
//
//   - once etcd refuses a write, kubox compacts, defragments and disarms by
//     itself: writes are accepted again within 90 s;
//   - `kubox etcd status` shows no alarm and the database below the quota,
//     and every ConfigMap acknowledged and not deleted is there with its data;
//   - a NOSPACE alarm raised when kubox is killed is cleared by the next
//     start, before the apiserver writes;
//   - after more big ConfigMaps are written and deleted and etcd compacted,
//     `kubox etcd defrag` makes the database smaller;
//   - the metrics endpoint serves the database gauges, and `kubox check`
//     has an etcd space line.
func TestEtcdSpace(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	n := harness.NewNode(t, env, "--disable-agent", "--disable-dns", "--etcd-quota-bytes", fmt.Sprint(spaceQuota))
	harness.Phase(t, "start", func(t *testing.T) {
		startBox(ctx, t, n)
		if _, err := n.Kubectl(ctx, "create", "namespace", "space"); err != nil {
			t.Fatal(err)
		}
	})

	// kept: every ConfigMap acknowledged and never deleted, with its data.
	kept := map[string]string{}
	harness.Phase(t, "survivors", func(t *testing.T) {
		var list strings.Builder
		list.WriteString("apiVersion: v1\nkind: List\nitems:\n")
		for i := range 50 {
			name, v := fmt.Sprintf("keep-%02d", i), fmt.Sprintf("value %d", i)
			fmt.Fprintf(&list, "- {apiVersion: v1, kind: ConfigMap, metadata: {name: %s, namespace: space}, data: {v: %q}}\n", name, v)
			kept[name] = v
		}
		applyManifest(ctx, t, n, "keep.yaml", list.String())
		name, v := "keep-big", randomText(t, bigValue)
		createConfigMap(ctx, t, n, name, v)
		kept[name] = v
	})

	var refusedAt time.Time
	harness.Phase(t, "fill-to-nospace", func(t *testing.T) {
		prev := ""
		for i := 0; ; i++ {
			if i == 200 {
				t.Fatalf("etcd took 200 ConfigMaps of %d KiB without refusing one (quota %d MiB)", bigValue>>10, spaceQuota>>20)
			}
			name, v := fmt.Sprintf("big-%03d", i), randomText(t, bigValue)
			err := tryCreateConfigMap(ctx, n, name, v)
			if err != nil {
				if !strings.Contains(err.Error(), "database space exceeded") {
					t.Fatalf("create %s: %v, want etcd's database space exceeded", name, err)
				}
				refusedAt = time.Now()
				t.Logf("etcd refused %s after %d ConfigMaps of %d KiB: %v", name, i, bigValue>>10, err)
				break
			}
			kept[name] = v
			if prev != "" { // deletes are accepted even under NOSPACE
				if _, err := n.Kubectl(ctx, "delete", "configmap", "-n", "space", prev, "--wait=false"); err != nil {
					t.Fatal(err)
				}
				delete(kept, prev)
			}
			prev = name
		}
	})

	harness.Phase(t, "recovers-by-itself", func(t *testing.T) {
		var err error
		for time.Since(refusedAt) < 90*time.Second {
			if err = tryCreateConfigMap(ctx, n, "after", "written after the recovery"); err == nil {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if err != nil {
			t.Fatalf("writes still refused 90 s after NOSPACE: %v", err)
		}
		kept["after"] = "written after the recovery"
		t.Logf("writes accepted again %s after etcd refused one", time.Since(refusedAt).Round(time.Second))
		st := etcdStatus(ctx, t, n)
		if len(st.Alarms) != 0 {
			t.Errorf("kubox etcd status shows alarms %v after the recovery", st.Alarms)
		}
		if m := st.Members[0]; m.DBSize >= spaceQuota || m.Quota != spaceQuota {
			t.Errorf("member %s: database %d bytes of a %d quota, want below %d", m.Name, m.DBSize, m.Quota, spaceQuota)
		}
		logHas(t, n, "disarmed etcd's NOSPACE alarm")
	})

	harness.Phase(t, "nothing-lost", func(t *testing.T) {
		out, err := n.Kubectl(ctx, "get", "configmaps", "-n", "space", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name string }
				Data     map[string]string
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, cm := range list.Items {
			got[cm.Metadata.Name] = cm.Data["v"]
		}
		for name, v := range kept {
			if g, ok := got[name]; !ok {
				t.Errorf("ConfigMap %s (acknowledged) is lost", name)
			} else if g != v {
				t.Errorf("ConfigMap %s has other data (%d bytes, want %d)", name, len(g), len(v))
			}
		}
		t.Logf("%d ConfigMaps kept with their data", len(kept))
	})

	harness.Phase(t, "alarm-across-restart", func(t *testing.T) {
		const disarmed = "disarmed etcd's NOSPACE alarm"
		// A NOSPACE alarm is kept in etcd's database: the next start must
		// clear it before the apiserver starts. The alarm is raised through
		// etcd's API and kubox killed at once; should kubox's 10 s poll clear
		// it in between, it is tried again.
		for attempt := 0; ; attempt++ {
			before := logCount(t, n, disarmed)
			raiseNospace(ctx, t, n)
			n.Kill()
			if logCount(t, n, disarmed) == before {
				break
			}
			if attempt == 2 {
				t.Fatal("kubox cleared the alarm before it was killed, three times")
			}
			startBox(ctx, t, n)
		}
		before := logCount(t, n, disarmed)
		startBox(ctx, t, n)
		createConfigMap(ctx, t, n, "after-restart", "written after a restart with NOSPACE raised")
		kept["after-restart"] = "written after a restart with NOSPACE raised"
		if logCount(t, n, disarmed) != before+1 {
			t.Errorf("kubox's log has no %q from the start", disarmed)
		}
		for _, args := range [][]string{{"list"}, {"disarm"}} {
			out, err := n.Kubox(ctx, append([]string{"etcd", "alarm", "--data-dir", n.DataDir}, args...)...)
			if err != nil || !strings.Contains(out, "no alarm") {
				t.Errorf("kubox etcd alarm %s: %v: %s", args[0], err, out)
			}
		}
		out, err := n.Kubectl(ctx, "get", "configmaps", "-n", "space", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		for name := range kept {
			if !strings.Contains(out, "configmap/"+name+"\n") {
				t.Errorf("ConfigMap %s lost across the restart", name)
			}
		}
	})

	harness.Phase(t, "defrag", func(t *testing.T) {
		for i := range 8 {
			name := fmt.Sprintf("churn-%d", i)
			createConfigMap(ctx, t, n, name, randomText(t, bigValue))
			if _, err := n.Kubectl(ctx, "delete", "configmap", "-n", "space", name); err != nil {
				t.Fatal(err)
			}
		}
		compactEtcd(ctx, t, n)
		out, err := n.Kubox(ctx, "etcd", "defrag", "--data-dir", n.DataDir, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Before, After struct {
				DBSize int64 `json:"dbSize"`
			}
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("kubox etcd defrag -o json: %v: %s", err, out)
		}
		t.Logf("kubox etcd defrag: %d -> %d bytes", res.Before.DBSize, res.After.DBSize)
		if res.After.DBSize > res.Before.DBSize-4*bigValue {
			t.Errorf("defrag after deleting and compacting 8 ConfigMaps of %d KiB: %d -> %d bytes, want at least %d bytes less",
				bigValue>>10, res.Before.DBSize, res.After.DBSize, 4*bigValue)
		}
		text, err := n.Kubox(ctx, "etcd", "defrag", "--data-dir", n.DataDir)
		if err != nil || !strings.Contains(text, "defragmenting etcd member") || !strings.Contains(text, "defragmented in") {
			t.Errorf("kubox etcd defrag without -o: %v: %s", err, text)
		}
	})

	harness.Phase(t, "metrics-and-check", func(t *testing.T) {
		assertMetricsEndpoint(t, n, "https://127.0.0.1:10259/metrics",
			"kubox_etcd_db_size_bytes", "kubox_etcd_db_size_in_use_bytes", "kubox_etcd_quota_bytes 3.3554432e+07", "kubox_etcd_nospace_alarm 0")
		out, _ := n.Kubox(ctx, "check", "--data-dir", n.DataDir, "-o", "json") // other lines may FAIL on a test host
		var results []struct{ Name, Status, Message string }
		if err := json.NewDecoder(strings.NewReader(out[max(strings.Index(out, "[\n"), 0):])).Decode(&results); err != nil {
			t.Fatalf("kubox check -o json: %v: %s", err, out)
		}
		for _, r := range results {
			if r.Name == "etcd space" {
				t.Logf("kubox check: %s %s", r.Status, r.Message)
				if r.Status != "OK" || !strings.Contains(r.Message, "of a 32.0 MiB quota") {
					t.Errorf("kubox check etcd space line: %s %s", r.Status, r.Message)
				}
				return
			}
		}
		t.Errorf("kubox check has no etcd space line: %s", out)
	})
}

// randomText is n bytes of incompressible text.
func randomText(t *testing.T, n int) string {
	b := make([]byte, n*3/4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func applyManifest(ctx context.Context, t *testing.T, n *harness.Node, file, manifest string) {
	t.Helper()
	mf := filepath.Join(n.Root, file)
	if err := os.WriteFile(mf, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Kubectl(ctx, "apply", "-f", mf); err != nil {
		t.Fatal(err)
	}
}

func createConfigMap(ctx context.Context, t *testing.T, n *harness.Node, name, v string) {
	t.Helper()
	if err := tryCreateConfigMap(ctx, n, name, v); err != nil {
		t.Fatal(err)
	}
}

// tryCreateConfigMap creates ConfigMap space/name with data v: v; nil
// means the apiserver acknowledged it.
func tryCreateConfigMap(ctx context.Context, n *harness.Node, name, v string) error {
	mf := filepath.Join(n.Root, "cm.json")
	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]string{"name": name, "namespace": "space"}, "data": map[string]string{"v": v}}
	data, _ := json.Marshal(cm)
	if err := os.WriteFile(mf, data, 0o600); err != nil {
		return err
	}
	_, err := n.Kubectl(ctx, "create", "-f", mf)
	return err
}

type etcdStatusOutput struct {
	Members []struct {
		Name   string
		DBSize int64 `json:"dbSize"`
		InUse  int64 `json:"dbSizeInUse"`
		Quota  int64 `json:"quota"`
	}
	Alarms []struct{ Member, Alarm string }
}

func etcdStatus(ctx context.Context, t *testing.T, n *harness.Node) etcdStatusOutput {
	t.Helper()
	out, err := n.Kubox(ctx, "etcd", "status", "--data-dir", n.DataDir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st etcdStatusOutput
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Members) != 1 {
		t.Fatalf("kubox etcd status -o json: %v: %s", err, out)
	}
	text, err := n.Kubox(ctx, "etcd", "status", "--data-dir", n.DataDir)
	t.Logf("kubox etcd status:\n%s", text)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// compactEtcd compacts n's etcd to its current revision, as the
// apiserver's compaction would within 5 minutes.
func compactEtcd(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	cli := localEtcd(t, n)
	defer cli.Close()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}

// raiseNospace raises the NOSPACE alarm of n's etcd member, as etcd does
// when a write would pass the quota.
func raiseNospace(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	cli := localEtcd(t, n)
	defer cli.Close()
	st, err := cli.Status(ctx, "https://127.0.0.1:2379")
	if err != nil {
		t.Fatal(err)
	}
	_, err = pb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx,
		&pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: pb.AlarmType_NOSPACE})
	if err != nil {
		t.Fatal(err)
	}
}

// localEtcd is a client of n's etcd member with n's etcd client certificate.
func localEtcd(t *testing.T, n *harness.Node) *clientv3.Client {
	t.Helper()
	dir := filepath.Join(n.DataDir, "pki", "etcd")
	tlsCfg, err := (&transport.TLSInfo{
		CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"),
		TrustedCAFile: filepath.Join(dir, "server-ca.crt"),
	}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://127.0.0.1:2379"}, TLS: tlsCfg, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// logHas fails t unless n's log has want.
func logHas(t *testing.T, n *harness.Node, want string) {
	t.Helper()
	if logCount(t, n, want) == 0 {
		t.Errorf("kubox's log lacks %q", want)
	}
}

// logCount counts want in n's log.
func logCount(t *testing.T, n *harness.Node, want string) int {
	t.Helper()
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), want)
}
