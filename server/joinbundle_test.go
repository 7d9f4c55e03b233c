package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func tokenSecret(id string, expires time.Time) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tokenPrefixName + id, Namespace: "kube-system"},
		Type:       tokenSecretType,
		Data:       map[string][]byte{"token-id": []byte(id), "expiration": []byte(expires.Format(time.RFC3339))},
	}
}

// The publisher removes the plaintext PKI an older kubox kept in the join
// Secret and the bundles of expired or deleted tokens, keeps those of live
// tokens, and deletes the single-use token this box joined with.
func TestPublisherCleansJoinSecret(t *testing.T) {
	now := time.Now()
	old := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: JoinSecret, Namespace: "kube-system"},
		Data: map[string][]byte{
			clusterKey: []byte(`{"clusterCIDR":"old"}`), "ca.key": []byte("-----BEGIN EC PRIVATE KEY-----"),
			"etcd..peer-ca.key": []byte("k"), "encryption-config.yaml": []byte("e"),
			sealedKey("live01"): []byte("s"), sealedKey("exprd1"): []byte("s"), sealedKey("gone01"): []byte("s"),
			sealedKey("mine01"): []byte("s"),
		},
	}
	client := fake.NewClientset(old, tokenSecret("live01", now.Add(time.Hour)), tokenSecret("exprd1", now.Add(-time.Minute)),
		tokenSecret("mine01", now.Add(time.Hour)))
	state := filepath.Join(t.TempDir(), joinStateFile)
	if err := os.WriteFile(state, []byte(`{"peers":["https://192.0.2.1:2379"],"token":"mine01"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := ClusterSettings{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDomain: "cluster.local", EtcdClientPort: 2379}
	p := &publisher{client: client, settings: settings, joinState: state, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	if err := p.publish(ctx); err != nil {
		t.Fatal(err)
	}
	sec, err := client.CoreV1().Secrets("kube-system").Get(ctx, JoinSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k, v := range sec.Data {
		keys = append(keys, k)
		if strings.Contains(string(v), "PRIVATE KEY") {
			t.Errorf("%s still holds a private key", k)
		}
	}
	slices.Sort(keys)
	if want := []string{clusterKey, sealedKey("live01")}; !slices.Equal(keys, want) {
		t.Errorf("join Secret keys %v, want %v", keys, want)
	}
	var got ClusterSettings
	if err := json.Unmarshal(sec.Data[clusterKey], &got); err != nil || got != settings {
		t.Errorf("cluster.json %s: %v", sec.Data[clusterKey], err)
	}
	if _, err := client.CoreV1().Secrets("kube-system").Get(ctx, tokenPrefixName+"mine01", metav1.GetOptions{}); err == nil {
		t.Error("the single-use token this box joined with was not deleted")
	}
	if _, err := client.CoreV1().Secrets("kube-system").Get(ctx, tokenPrefixName+"live01", metav1.GetOptions{}); err != nil {
		t.Errorf("another live token was deleted: %v", err)
	}
	raw, _ := os.ReadFile(state)
	var st joinState
	if err := json.Unmarshal(raw, &st); err != nil || st.Token != "" || len(st.Peers) != 1 {
		t.Errorf("join.json after the token was used: %s (%v)", raw, err)
	}
	// Again, as on a restart: nothing left to do, no error.
	if err := p.publish(ctx); err != nil {
		t.Fatal(err)
	}
}
