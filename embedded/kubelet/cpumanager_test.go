package kubelet

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRetireStaleCPUManagerState(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "cpu_manager_state")
	write := func(s string) {
		if err := os.WriteFile(state, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := func() []string { m, _ := filepath.Glob(state + ".old-*"); return m }

	// No state: nothing to do.
	k := New(Config{RootDir: dir, CPUManagerPolicy: "static"})
	if err := k.retireStaleCPUManagerState(); err != nil {
		t.Fatal(err)
	}
	// Same policy: kept.
	write(`{"policyName":"static","defaultCpuSet":"0","checksum":1}`)
	if err := k.retireStaleCPUManagerState(); err != nil || len(old()) != 0 {
		t.Fatalf("same policy: %v %v", err, old())
	}
	// Policy changed to none (the default): moved aside, not deleted.
	k = New(Config{RootDir: dir})
	if err := k.retireStaleCPUManagerState(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) || len(old()) != 1 {
		t.Fatalf("after change: state %v, old %v", err, old())
	}
	// Unreadable state: moved aside too.
	write("garbage")
	if err := k.retireStaleCPUManagerState(); err != nil || len(old()) != 2 {
		t.Fatalf("garbage: %v %v", err, old())
	}
}

func TestParseReservedAndChecks(t *testing.T) {
	m, err := ParseReserved("system-reserved", "cpu=100m, memory=256Mi")
	if err != nil || m["cpu"] != "100m" || m["memory"] != "256Mi" {
		t.Fatalf("%v %v", m, err)
	}
	if m, err := ParseReserved("kube-reserved", "none"); err != nil || m != nil {
		t.Fatalf("none: %v %v", m, err)
	}
	for _, bad := range []string{"cpu", "gpu=1", "memory=lots"} {
		if _, err := ParseReserved("kube-reserved", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if CheckPolicy("static") != nil || CheckPolicy("none") != nil || CheckPolicy("Static") == nil {
		t.Error("CheckPolicy")
	}
	if CheckReservedCPUs("0") != nil || CheckReservedCPUs("") != nil || CheckReservedCPUs("x") == nil || CheckReservedCPUs("4096") == nil {
		t.Error("CheckReservedCPUs")
	}
	c := New(Config{CPUManagerPolicy: "static", ReservedCPUs: "0", SystemReserved: map[string]string{"memory": "1Gi"}}).Configuration()
	if c.CPUManagerPolicy != "static" || c.ReservedSystemCPUs != "0" || c.SystemReserved["memory"] != "1Gi" {
		t.Errorf("Configuration: %q %q %v", c.CPUManagerPolicy, c.ReservedSystemCPUs, c.SystemReserved)
	}
}
