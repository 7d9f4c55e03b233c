package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/kubox/kubox/backup"
)

// forgedCRB is the ClusterRoleBinding a forger adds to a real snapshot.
const forgedCRB = "e2e-forged-admin"

// forgeSnapshot does what anyone who can write to the snapshot store can:
// it takes a real snapshot's content (here read with the identity, as if
// leaked; the point is what the forger can write), adds a
// ClusterRoleBinding of system:anonymous to cluster-admin to its etcd data,
// and writes a new snapshot encrypted to the recipient printed in the real
// one's header, with a correct body and trailer, signed by signer (nil:
// unsigned). It returns the forged file.
func forgeSnapshot(ctx context.Context, t *testing.T, real, keyFile, outDir string, signer *backup.SigningKey) string {
	t.Helper()
	hdr, _, err := backup.ReadHeader(real)
	if err != nil {
		t.Fatal(err)
	}
	key, err := backup.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	content := filepath.Join(work, "content")
	if _, err := backup.Extract(real, key, backup.Trust{InsecureSkipSignature: true}, content); err != nil {
		t.Fatal(err)
	}

	// The real etcd data, served by an etcd of the test's own.
	peer := fmt.Sprintf("http://127.0.0.1:%d", freeTCPPort(t))
	etcdDir := filepath.Join(work, "etcd")
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: filepath.Join(content, "etcd.db"), Name: "forge", OutputDataDir: etcdDir,
		PeerURLs: []string{peer}, InitialCluster: "forge=" + peer, InitialClusterToken: "forge",
	}); err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = "forge", etcdDir, "error"
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freeTCPPort(t)))
	pu, _ := url.Parse(peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = "forge=" + peer
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("forger's etcd not ready")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// Stored as the apiserver stores it: protobuf in the "k8s\0" envelope.
	scheme := runtime.NewScheme()
	if err := rbacv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	enc := serializer.NewCodecFactory(scheme).EncoderForVersion(protobuf.NewSerializer(scheme, scheme), rbacv1.SchemeGroupVersion)
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: forgedCRB, UID: "0f0f0f0f-0000-4000-8000-000000000001", CreationTimestamp: metav1.Now()},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "system:anonymous"}},
	}
	val, err := runtime.Encode(enc, crb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/clusterrolebindings/"+forgedCRB, string(val)); err != nil {
		t.Fatal(err)
	}
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	pki, err := backup.PKIFilesFromDir(filepath.Join(content, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := backup.Write(ctx, outDir, rc, backup.WriteOptions{
		Header: backup.Header{ClusterID: hdr.ClusterID, NodeName: hdr.NodeName, EtcdRevision: hdr.EtcdRevision,
			KuboxVersion: hdr.KuboxVersion, Name: hdr.Name, CreatedAt: hdr.CreatedAt.Add(time.Second)},
		PKIFiles: pki, Recipient: hdr.Recipient, Signer: signer,
	})
	if err != nil {
		t.Fatal(err)
	}
	return forged.Path
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
