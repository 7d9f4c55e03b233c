package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "kubox")
	p := filepath.Join(dir, "backup.key")
	k, err := WriteKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, p, 0o600)
	assertMode(t, dir, 0o700)
	assertNoTempLeft(t, dir)

	loaded, err := LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Recipient() != k.Recipient() {
		t.Fatalf("loaded key %s, wrote %s", loaded.Recipient(), k.Recipient())
	}
	// A snapshot written with the generated key opens with the loaded one.
	e := writeSnapshot(t, t.TempDir(), []byte("db"), WriteOptions{Header: testHeader(), Key: k})
	if _, err := Verify(e.Path, loaded, testTrust); err != nil {
		t.Fatal(err)
	}

	// The file is a plain age identity file, usable by the age tool.
	data, _ := os.ReadFile(p)
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil || len(ids) != 1 {
		t.Fatalf("key file is not an age identity file: %v", err)
	}
	if !strings.Contains(string(data), "# public key: "+k.Recipient()) {
		t.Errorf("key file does not show its public key:\n%s", data)
	}

	// Never overwritten.
	if _, err := WriteKeyFile(p); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteKeyFile: %v, want fs.ErrExist", err)
	}
	if again, _ := os.ReadFile(p); !bytes.Equal(again, data) {
		t.Fatal("WriteKeyFile changed an existing key file")
	}
}

func TestKeyDoesNotPrintSecret(t *testing.T) {
	k := fixedKey(t)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(strings.ToUpper(s), "AGE-SECRET-KEY") {
			t.Errorf("formatted key shows the secret: %s", s)
		}
	}
}

func TestLoadKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadKeyFile(filepath.Join(dir, "missing.key"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v, want fs.ErrNotExist", err)
	}

	loose := filepath.Join(dir, "loose.key")
	os.WriteFile(loose, []byte(fixedKeyFile), 0o600)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(loose, mode)
		_, err = LoadKeyFile(loose)
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+loose) {
			t.Errorf("mode %#o: %v, want ErrKeyPermissions telling to chmod 600", mode, err)
		}
	}
	os.Chmod(loose, 0o400)
	if _, err := LoadKeyFile(loose); err != nil {
		t.Errorf("mode 0400 refused: %v", err)
	}

	for name, content := range map[string]string{
		"garbage":   "hello\n",
		"empty":     "",
		"recipient": "age1mavva4fw6hznw7vt7dlchd7l5cklwg89u8v8fyhl8ehxkez2xqfqjxkq4v\n",
		"two keys":  fixedKeyFile + "AGE-SECRET-KEY-1E75TWPM4DNTFASF83A6UR3YHDDEZX8TZMYD8QRADQNT6JEGXR3JQXKDCDZ\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		_, err := LoadKeyFile(p)
		if !errors.Is(err, ErrNotKey) {
			t.Errorf("%s: %v, want ErrNotKey", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "AGE-SECRET-KEY") {
			t.Errorf("%s: error shows key material: %v", name, err)
		}
	}
	if _, err := LoadKeyFile(dir); !errors.Is(err, ErrNotKey) {
		t.Errorf("directory: %v, want ErrNotKey", err)
	}
}
