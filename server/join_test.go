package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubox/kubox/bootstrap"
)

func TestJoinAddr(t *testing.T) {
	for in, want := range map[string]string{
		"https://10.0.0.1:6443": "10.0.0.1:6443", "https://box1": "box1:6443", "https://[fd00::1]:7443": "[fd00::1]:7443",
	} {
		if got, _, err := joinAddr(in); err != nil || got != want {
			t.Errorf("joinAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"http://10.0.0.1:6443", "10.0.0.1:6443", "https://", "::"} {
		if _, _, err := joinAddr(bad); err == nil {
			t.Errorf("joinAddr(%q) accepted", bad)
		}
	}
}

func TestCompleteJoinNeedsToken(t *testing.T) {
	c := validConfig(t)
	c.JoinURL = "https://10.0.0.1:6443"
	if err := completeValid(&c); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("join without token: %v", err)
	}
}

// A box holding another cluster's PKI is refused before any connection,
// and its files are left as they were.
func TestPrepareJoinOtherCluster(t *testing.T) {
	c := validConfig(t)
	c.DataDir = t.TempDir()
	c.JoinURL = "https://192.0.2.99:6443" // never dialled
	if err := completeValid(&c); err == nil {
		t.Fatal("Validate accepted --join without a token")
	}
	tok, _ := bootstrap.NewToken(strings.Repeat("ab", 32))
	c.Token = tok.String()
	if err := completeValid(&c); err != nil {
		t.Fatal(err)
	}
	if _, err := bootstrap.Ensure(context.Background(), c.PKIConfig()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(c.Paths().PKI, "ca.key"))
	s, _ := New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, err := s.prepareJoin(context.Background())
	var je *JoinError
	if !errors.As(err, &je) || !strings.Contains(err.Error(), "already belongs to another cluster") {
		t.Fatalf("prepareJoin: %v", err)
	}
	if strings.Contains(err.Error(), tok.Secret) {
		t.Fatal("the refusal repeats the token's secret")
	}
	after, _ := os.ReadFile(filepath.Join(c.Paths().PKI, "ca.key"))
	if string(before) != string(after) {
		t.Fatal("the box's CA key changed")
	}
	// A malformed token is refused first, without repeating it.
	c.Token = "K10" + strings.Repeat("z", 64) + "::abcdef.secretsecretsecr"
	s, _ = New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := s.prepareJoin(context.Background()); err == nil || strings.Contains(err.Error(), "secretsecret") {
		t.Fatalf("malformed token: %v", err)
	}
}
