package bootstrap

import (
	"encoding/base64"
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestEncryptionConfig(t *testing.T) {
	p := mustEnsure(t, testConfig(t))
	data, err := os.ReadFile(p.EncryptionConfig)
	if err != nil {
		t.Fatal(err)
	}
	// Decode generically, not with the package's own types, so a wrong field
	// name would show.
	var doc struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Resources  []struct {
			Resources []string         `json:"resources"`
			Providers []map[string]any `json:"providers"`
		} `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != "apiserver.config.k8s.io/v1" || doc.Kind != "EncryptionConfiguration" {
		t.Errorf("apiVersion/kind = %s/%s", doc.APIVersion, doc.Kind)
	}
	if len(doc.Resources) != 1 || len(doc.Resources[0].Resources) != 1 || doc.Resources[0].Resources[0] != "secrets" {
		t.Fatalf("resources = %+v, want one set for secrets", doc.Resources)
	}
	provs := doc.Resources[0].Providers
	if len(provs) != 2 {
		t.Fatalf("%d providers, want secretbox then identity", len(provs))
	}
	if _, ok := provs[1]["identity"]; !ok || len(provs[1]) != 1 {
		t.Errorf("second provider %v, want identity", provs[1])
	}
	sb, ok := provs[0]["secretbox"].(map[string]any)
	if !ok || len(provs[0]) != 1 {
		t.Fatalf("first provider %v, want secretbox", provs[0])
	}
	keys, _ := sb["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("secretbox keys %v, want one", sb["keys"])
	}
	k, _ := keys[0].(map[string]any)
	secret, err := base64.StdEncoding.DecodeString(k["secret"].(string))
	if err != nil || len(secret) != 32 || k["name"] == "" {
		t.Errorf("secretbox key: name %v, %d-byte secret, err %v; want a named 32-byte key", k["name"], len(secret), err)
	}

	// Another cluster gets another key.
	other, _ := os.ReadFile(mustEnsure(t, testConfig(t)).EncryptionConfig)
	if string(other) == string(data) {
		t.Error("two PKIs got the same encryption key")
	}
}

func TestBrokenEncryptionConfigIsKeptAndReported(t *testing.T) {
	cfg := testConfig(t)
	p := mustEnsure(t, cfg)
	if err := os.WriteFile(p.EncryptionConfig, []byte("kind: Something\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(t.Context(), cfg); err == nil {
		t.Fatal("Ensure accepted a foreign encryption config")
	}
	data, _ := os.ReadFile(p.EncryptionConfig)
	if string(data) != "kind: Something\n" {
		t.Error("encryption config was rewritten")
	}
}
