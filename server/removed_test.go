package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRemovedErrorIsOneLineWithExitStatus(t *testing.T) {
	err := fmt.Errorf("etcd: %w", &RemovedError{DataDir: "/var/lib/kubox"})
	var removed *RemovedError
	if !errors.As(err, &removed) || removed.ExitCode() != ExitRemoved || ExitRemoved != 78 {
		t.Fatalf("RemovedError not found or wrong exit status in %v", err)
	}
	msg := removed.Error()
	for _, want := range []string{"etcd member was removed from the cluster", "/var/lib/kubox", "aside", "new token"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message is not one line: %q", msg)
	}
}
