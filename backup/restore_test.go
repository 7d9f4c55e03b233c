package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a plain-HTTP one-member etcd in dir and returns its client
// URL and a stop function.
func startEtcd(t *testing.T, dir, name string) (string, func()) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd not ready")
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			e.Close()
		}
	}
	t.Cleanup(stop)
	return cu.String(), stop
}

func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d", p, fi.Mode(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSaveRestore saves a live etcd with Save, restores it with Restore into
// an existing data dir (moved aside) for another member name, and reads the
// keys back from a member started on the restored dir.
func TestSaveRestore(t *testing.T) {
	root := t.TempDir()
	url, stop := startEtcd(t, filepath.Join(root, "etcd-src"), "old-box")
	ep := EtcdEndpoint{URL: url}
	cli, err := ConnectEtcd(ep)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/default/cm-%03d", i), strings.Repeat("v", 1000)); err != nil {
			t.Fatal(err)
		}
	}
	files, _, _ := testPKI(t)
	pkiDir := filepath.Dir(files["ca.crt"])
	if err := os.WriteFile(filepath.Join(pkiDir, "apiserver.crt.old-1700000000"), []byte("retired"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	snapDir := filepath.Join(root, "snapshots")
	var steps []string
	res, err := Save(ctx, SaveOptions{Etcd: ep, PKIDir: pkiDir, Dir: snapDir, Key: key, Signer: testSigner, KuboxVersion: "test", // node name: etcd's member name
		Progress: func(p Progress) { steps = append(steps, p.Step) }})
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot must not come back.
	if _, err := cli.Put(ctx, "/registry/configmaps/default/late", "x"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	stop()
	if res.Header.NodeName != "old-box" || res.Header.EtcdRevision < 101 || res.Header.PKIFiles != len(files) || res.Header.Scheduled || res.Header.Name != "manual" {
		t.Errorf("header %+v", res.Header)
	}
	if !slices.Contains(steps, "connect") || !slices.Contains(steps, "done") {
		t.Errorf("progress steps %v", steps)
	}

	dataDir := filepath.Join(root, "data")
	if err := os.MkdirAll(filepath.Join(dataDir, "etcd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "old-file"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))

	// Bad input first: nothing on disk changes.
	before := dirListing(t, root)
	for _, c := range []struct {
		name string
		key  *Key
		file string
		want error
	}{
		{"wrong key", newKey(t), res.Path, ErrWrongKey},
		{"no key", nil, res.Path, ErrKeyRequired},
		{"not a snapshot", key, files["ca.key"], ErrNotSnapshot},
		{"missing", key, filepath.Join(root, "nope"), fs.ErrNotExist},
	} {
		_, err := Restore(RestoreOptions{Trust: testTrust, Snapshot: c.file, Key: c.key, DataDir: dataDir, NodeName: "new-box", PeerURL: peer})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", c.name, err)
		}
		if after := dirListing(t, root); !slices.Equal(after, before) {
			t.Fatalf("%s: disk changed:\n%v\nwas\n%v", c.name, after, before)
		}
	}

	// A staging dir of a crashed restore (plaintext keys) is swept first.
	crashed := filepath.Join(root, ".data.restore-1")
	if err := os.MkdirAll(filepath.Join(crashed, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	var warned []string
	rr, err := Restore(RestoreOptions{Trust: testTrust, Snapshot: res.Path, Key: key, DataDir: dataDir, NodeName: "new-box", PeerURL: peer,
		Warn: func(l string) { warned = append(warned, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "removed 1 leftover") {
		t.Errorf("warnings %q, want one saying the crashed restore's staging dir was removed", warned)
	}
	if _, err := os.Stat(crashed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("crashed restore's staging dir kept: %v", err)
	}
	if _, err := os.Stat(intentPath(dataDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore journal left behind: %v", err)
	}
	if rr.OldDataDir == "" {
		t.Fatal("no old data dir reported")
	}
	if b, err := os.ReadFile(filepath.Join(rr.OldDataDir, "old-file")); err != nil || string(b) != "keep me" {
		t.Errorf("old data dir not kept: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pki", "apiserver.crt.old-1700000000")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("retired cert restored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pki", "etcd", "server-ca.key")); err != nil {
		t.Errorf("PKI not restored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "etcd.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("extracted etcd.db left behind: %v", err)
	}
	m, err := ReadRestoreMarker(dataDir)
	if err != nil || m == nil || m.SnapshotNode != "old-box" || m.NodeName != "new-box" || m.OldDataDir != rr.OldDataDir {
		t.Fatalf("restore marker %+v %v", m, err)
	}
	if err := FinishRestoreMarker(dataDir); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadRestoreMarker(dataDir); m != nil || err != nil {
		t.Errorf("marker still there after finish: %+v %v", m, err)
	}
	if des, _ := os.ReadDir(root); slices.ContainsFunc(des, func(d fs.DirEntry) bool { return strings.Contains(d.Name(), ".restore-") }) {
		t.Errorf("staging dir left in %s", root)
	}

	// A member on the restored dir has exactly the snapshot's keys, and
	// its revision was bumped past the old one.
	url2, _ := startEtcdAt(t, filepath.Join(dataDir, "etcd"), "new-box", peer)
	cli2, err := ConnectEtcd(EtcdEndpoint{URL: url2})
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	got, err := cli2.Get(ctx, "/registry/", clientv3WithPrefix()...)
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != 100 {
		t.Errorf("restored etcd has %d keys, want the snapshot's 100", got.Count)
	}
	if got.Header.Revision < etcdRevisionBump {
		t.Errorf("restored revision %d not bumped", got.Header.Revision)
	}
	ms, err := cli2.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 1 || ms.Members[0].Name != "new-box" || ms.Members[0].PeerURLs[0] != peer {
		t.Errorf("members %+v", ms.Members)
	}
}

// startEtcdAt starts a member on an existing (restored) dir with the given
// peer URL.
func startEtcdAt(t *testing.T, dir, name, peer string) (string, func()) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	pu, _ := url.Parse(peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = name + "=" + peer
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("restored etcd not ready")
	}
	t.Cleanup(e.Close)
	return cu.String(), e.Close
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	e := writeSnapshot(t, dir, randomBytes(100, 1), WriteOptions{Header: testHeader(), Key: newKey(t)})
	for _, bad := range []string{"", "../x", "a/b", ".hidden"} {
		if _, err := Remove(dir, bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}
	other := filepath.Join(dir, "notes.kbsnap")
	if err := os.WriteFile(other, []byte("my notes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Remove(dir, "notes"); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("Remove of a non-snapshot: %v", err)
	}
	name := strings.TrimSuffix(filepath.Base(e.Path), Extension)
	if p, err := Remove(dir, name); err != nil || p != e.Path {
		t.Fatalf("Remove(%q) = %q, %v", name, p, err)
	}
	if _, err := os.Stat(e.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("still there: %v", err)
	}
}

func clientv3WithPrefix() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }

// TestRestoreErrorsNameStep: each failing step says what restore was doing,
// and the sentinel or OS error stays reachable with errors.Is.
func TestRestoreErrorsNameStep(t *testing.T) {
	key := fixedKey(t)
	root := t.TempDir()
	snap := filepath.Join(root, "small.kbsnap")
	// Its etcd.db is random bytes: it verifies, and etcd rejects it.
	if err := os.WriteFile(snap, smallSnapshot(t, key), 0o600); err != nil {
		t.Fatal(err)
	}
	aFile := filepath.Join(root, "a-file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, snapshot, dataDir, step string
		want                          error
	}{
		{"missing snapshot", filepath.Join(root, "nope"), filepath.Join(root, "data"), "restore: open the snapshot: ", fs.ErrNotExist},
		{"parent is a file", snap, filepath.Join(aFile, "sub", "data"), "restore: create the data dir's parent: ", syscall.ENOTDIR},
		{"bad etcd db", snap, filepath.Join(root, "data"), "restore: check the etcd db: ", ErrCorrupted},
	} {
		_, err := Restore(RestoreOptions{Trust: testTrust, Snapshot: c.snapshot, Key: key, DataDir: c.dataDir, NodeName: "box", PeerURL: "http://127.0.0.1:2380"})
		if !errors.Is(err, c.want) || !strings.HasPrefix(fmt.Sprint(err), c.step) {
			t.Errorf("%s: %v, want %q wrapping %v", c.name, err, c.step, c.want)
		}
	}
	if got, err := os.ReadDir(root); err != nil || len(got) != 2 {
		t.Errorf("want only a-file and small.kbsnap left, got %v %v", got, err)
	}
}
