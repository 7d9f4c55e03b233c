package bootstrap

import (
	"bytes"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// TestEncryptionConfigLoadsInAPIServer feeds the file to the apiserver's own
// loader and encrypts a secret with it: the real proof the file is right.
func TestEncryptionConfigLoadsInAPIServer(t *testing.T) {
	p := mustEnsure(t, testConfig(t))
	ec, err := encryptionconfig.LoadEncryptionConfig(t.Context(), p.EncryptionConfig, false, "test")
	if err != nil {
		t.Fatalf("apiserver rejects %s: %v", p.EncryptionConfig, err)
	}
	tr, ok := ec.Transformers[schema.GroupResource{Resource: "secrets"}]
	if !ok {
		t.Fatalf("no transformer for secrets; have %v", ec.Transformers)
	}
	plain := []byte("a secret value")
	dataCtx := value.DefaultContext("/registry/secrets/default/x")
	enc, err := tr.TransformToStorage(t.Context(), plain, dataCtx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(enc, []byte("k8s:enc:secretbox:v1:")) || bytes.Contains(enc, plain) {
		t.Errorf("secrets are not stored secretbox-encrypted: %q", enc[:min(len(enc), 30)])
	}
	dec, _, err := tr.TransformFromStorage(t.Context(), enc, dataCtx)
	if err != nil || !bytes.Equal(dec, plain) {
		t.Errorf("round trip: %q, %v", dec, err)
	}
	// Identity comes second, so secrets written before encryption stay readable.
	dec, _, err = tr.TransformFromStorage(t.Context(), plain, dataCtx)
	if err != nil || !bytes.Equal(dec, plain) {
		t.Errorf("reading an unencrypted secret: %q, %v", dec, err)
	}
}
