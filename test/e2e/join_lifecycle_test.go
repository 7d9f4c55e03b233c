package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// exitRemoved is kubox server's exit status when its etcd member was removed
// from the cluster (server.ExitRemoved; the systemd unit does not restart on it).
const exitRemoved = 78

// TestJoinLifecycle walks a box through the membership verbs on three
// control-plane-only boxes (network namespaces on a bridge):
//
//   - box2 joins as a learner and `kubox etcd promote` makes it a voter;
//   - box3's join fails after its learner was added (its host firewall
//     rejects the etcd peer port): the member is removed again, its etcd dir
//     and join.json are moved aside, one line says so, exit status non-zero;
//     with the firewall fixed, the same command joins;
//   - `kubox node remove box3` stops box3 (exit status 78), and starting it
//     again with the same arguments is refused at once, its data kept;
//   - with box2 down (no quorum) a join is refused within seconds.
func TestJoinLifecycle(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	network := harness.NewNetwork(t, "kbxlc", 3)
	ns, ip := network.Namespaces, network.IPs
	newBox := func(i int, extra ...string) *harness.Node {
		name := "box" + string(rune('1'+i))
		b := harness.NewNodeWith(t, env, harness.NodeOptions{NoHostRestore: true}, boxArgs(name, ip[i], append([]string{"--disable-agent"}, extra...)...)...)
		b.Netns = ns[i]
		return b
	}
	joinURL := "https://" + net.JoinHostPort(ip[0], "6443")
	box1 := newBox(0)
	box2 := newBox(1, "--join", joinURL)
	box3 := newBox(2, "--join", joinURL)
	t.Cleanup(func() {
		for _, b := range []*harness.Node{box3, box2, box1} {
			b.Kill()
		}
	})

	var tok, tok3 string
	harness.Phase(t, "box1-ready", func(t *testing.T) {
		startBox(ctx, t, box1)
		// Single use: each box its own.
		tok, tok3 = createToken(ctx, t, box1, "1h"), createToken(ctx, t, box1, "1h")
	})

	harness.Phase(t, "box2-joins-as-learner", func(t *testing.T) {
		box2.Env = []string{"KUBOX_TOKEN=" + tok}
		box3.Env = []string{"KUBOX_TOKEN=" + tok3}
		startBox(ctx, t, box2)
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=learner" {
			t.Fatalf("after box2's join etcd has %s, want box1=voter,box2=learner", got)
		}
	})

	harness.Phase(t, "promote", func(t *testing.T) {
		// Promote box2, through box2 itself (a learner: the verb asks the
		// members it joined). etcd refuses while the learner lags; retry then.
		var promoteOut string
		var err error
		deadline := time.Now().Add(time.Minute)
		for {
			promoteOut, err = box2.Kubox(ctx, "etcd", "promote", "box2", "--data-dir", box2.DataDir)
			if err == nil || !strings.Contains(promoteOut, "has not caught up") || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil || strings.TrimSpace(promoteOut) != "promoted box2 to voter" {
			t.Fatalf("etcd promote box2: %v %q, want \"promoted box2 to voter\"", err, promoteOut)
		}
		for _, b := range []*harness.Node{box1, box2} {
			if got := describe(members(ctx, t, b)); got != "box1=voter,box2=voter" {
				t.Fatalf("after promote, etcd members through %s: %s, want box1=voter,box2=voter", b.Netns, got)
			}
		}
		raw, err := box1.Kubox(ctx, "etcd", "members", "--data-dir", box1.DataDir, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var full []struct {
			ID      string   `json:"id"`
			Name    string   `json:"name"`
			Learner bool     `json:"learner"`
			Peers   []string `json:"peerURLs"`
			Clients []string `json:"clientURLs"`
		}
		if err := json.Unmarshal([]byte(raw), &full); err != nil {
			t.Fatalf("etcd members -o json: %v: %s", err, raw)
		}
		for _, m := range full {
			if m.Name != "box2" {
				continue
			}
			if m.ID == "" || m.Learner || len(m.Peers) != 1 || m.Peers[0] != "https://"+net.JoinHostPort(ip[1], "2380") ||
				len(m.Clients) != 1 || m.Clients[0] != "https://"+net.JoinHostPort(ip[1], "2379") {
				t.Errorf("box2 in etcd members -o json: %+v", m)
			}
		}
		if out, err := box1.Kubox(ctx, "etcd", "promote", "--data-dir", box1.DataDir); err != nil || strings.TrimSpace(out) != "no learner to promote" {
			t.Errorf("etcd promote with no learner left: %v %q", err, out)
		}
		if out, err := box1.Kubox(ctx, "etcd", "promote", "box9", "--data-dir", box1.DataDir); err == nil || !strings.Contains(out, "no etcd member named box9") {
			t.Errorf("etcd promote of an unknown name: %v %q", err, out)
		}
		// Writes go through box2's apiserver, which used box1's etcd while it was a learner.
		if _, err := box2.Kubectl(ctx, "create", "configmap", "after-promote"); err != nil {
			t.Fatal(err)
		}
	})

	// box3's host firewall rejects outgoing connections to etcd peer ports:
	// the join adds its learner, then its etcd cannot reach the others.
	nftBox3 := func(t *testing.T, script string) {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns[2], "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft in %s: %v: %s", ns[2], err, out)
		}
	}
	harness.Phase(t, "box3-join-fails-and-is-undone", func(t *testing.T) {
		nftBox3(t, "table inet kbxtest {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 2380 reject with tcp reset\n }\n}\n")
		begin := time.Now()
		box3.Start()
		done, err := box3.WaitExit(2 * time.Minute)
		if !done {
			box3.DumpLog(50)
			t.Fatal("box3's failing join did not end within 2 minutes")
		}
		t.Logf("box3's failing join ended in %s: %v", time.Since(begin).Round(time.Millisecond), err)
		if err == nil {
			t.Fatal("box3's failing join exited 0")
		}
		line := lastLineOf(t, box3)
		t.Logf("its last line: %s", line)
		for _, want := range []string{"join failed", "removed", "moved aside", "2380"} {
			if !strings.Contains(line, want) {
				t.Errorf("last line of the failed join lacks %q: %s", want, line)
			}
		}
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter" {
			t.Fatalf("after box3's failed join etcd has %s, want box1=voter,box2=voter", got)
		}
		for _, name := range []string{"etcd", "join.json"} {
			if ok, _ := exists(filepath.Join(box3.DataDir, name)); ok {
				t.Errorf("failed join left %s in place", name)
			}
			if aside, _ := filepath.Glob(filepath.Join(box3.DataDir, name+".old-*")); len(aside) != 1 {
				t.Errorf("failed join: want %s moved aside once, found %v", name, aside)
			}
		}
	})

	harness.Phase(t, "box3-joins-on-retry", func(t *testing.T) {
		// The cause fixed, the same command joins; box3 is promoted by itself
		// (a third voter).
		nftBox3(t, "delete table inet kbxtest\n")
		startBox(ctx, t, box3)
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter,box3=voter" {
			t.Fatalf("after box3's second join etcd has %s, want three voters", got)
		}
		if _, err := box3.Kubectl(ctx, "get", "configmap", "after-promote"); err != nil {
			t.Fatal(err)
		}
		if log, _ := os.ReadFile(box3.LogPath); strings.Contains(string(log), "ID of one removed this second") {
			t.Logf("the retry came within the second of the rolled-back add: etcd reused the removed ID once, and the add was retried")
		}
	})

	harness.Phase(t, "node-remove-stops-box3", func(t *testing.T) {
		// node remove: box3's kubox stops, with the exit status that keeps
		// systemd from restarting it.
		out, err := box1.Kubox(ctx, "node", "remove", "box3", "--data-dir", box1.DataDir, "--node-name", "box1")
		if err != nil || strings.TrimSpace(out) != "removed etcd member box3" {
			t.Fatalf("node remove box3: %v %q", err, out)
		}
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter" {
			t.Fatalf("after node remove etcd has %s, want box1=voter,box2=voter", got)
		}
		done, err := box3.WaitExit(time.Minute)
		if !done {
			t.Fatal("box3's kubox still runs a minute after its removal")
		}
		if code := exitCode(err); code != exitRemoved {
			t.Errorf("removed box3 exited with %v, want exit status %d", err, exitRemoved)
		}
		if line := lastLineOf(t, box3); !strings.Contains(line, "was removed from the cluster") {
			t.Errorf("removed box3's last line: %s", line)
		}
	})

	harness.Phase(t, "removed-box3-restart-refused", func(t *testing.T) {
		// Started again with the same arguments: refused at once, data kept.
		before, _ := os.ReadFile(box3.LogPath)
		begin := time.Now()
		box3.Start()
		done, err := box3.WaitExit(time.Minute)
		took := time.Since(begin)
		if !done {
			box3.DumpLog(50)
			t.Fatal("restart of the removed box3 was not refused within a minute")
		}
		t.Logf("restart of the removed box3 refused in %s", took.Round(time.Millisecond))
		if code := exitCode(err); code != exitRemoved {
			t.Errorf("restarted removed box3 exited with %v, want exit status %d", err, exitRemoved)
		}
		line := lastLineOf(t, box3)
		t.Logf("its last line: %s", line)
		for _, want := range []string{"was removed from the cluster", box3.DataDir, "aside", "new token"} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal of the removed box3 lacks %q: %s", want, line)
			}
		}
		if took > 20*time.Second {
			t.Errorf("refusing the removed box3 took %s, want a few seconds", took)
		}
		if ok, _ := exists(filepath.Join(box3.DataDir, "etcd", "member")); !ok {
			t.Errorf("refused restart did not keep box3's etcd data")
		}
		if aside, _ := filepath.Glob(filepath.Join(box3.DataDir, "etcd.old-*")); len(aside) != 1 {
			t.Errorf("refused restart moved etcd data aside: %v", aside)
		}
		// The disk guard starts first of all (it only watches free space);
		// nothing else may have started.
		if log, _ := os.ReadFile(box3.LogPath); len(log) >= len(before) {
			for _, l := range strings.Split(string(log[len(before):]), "\n") {
				if strings.Contains(l, "component ready") && !strings.Contains(l, "component=disk ") {
					t.Errorf("the removed box3 started components before refusing: %s", l)
				}
			}
		}
		if got := describe(members(ctx, t, box1)); got != "box1=voter,box2=voter" {
			t.Fatalf("after the removed box3's restart etcd has %s, want box1=voter,box2=voter", got)
		}
	})

	harness.Phase(t, "join-refused-without-quorum", func(t *testing.T) {
		// No quorum (box2 down, box1 alone of two voters): a join is refused
		// quickly, with nothing added.
		tokQ := createToken(ctx, t, box1, "1h")
		box2.Kill()
		begin := time.Now()
		refusedJoin(ctx, t, env, ns[2], ip[2], "quorum", nil, "--join", joinURL, "--token", tokQ)
		if took := time.Since(begin); took > 12*time.Second {
			t.Errorf("join without quorum refused after %s, want a few seconds", took)
		} else {
			t.Logf("join without quorum refused in %s", took.Round(time.Millisecond))
		}
	})
}

// lastLineOf is the last line b's kubox wrote.
func lastLineOf(t *testing.T, b *harness.Node) string {
	t.Helper()
	log, err := os.ReadFile(b.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return lastLine(string(log))
}

// exitCode is a process's exit status, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
