package containerd

import (
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestConfigIsValidTOMLWithKuboxPaths(t *testing.T) {
	for _, restrict := range []bool{true, false} {
		data, err := renderConfig(Config{
			Root: "/var/lib/kubox/containerd", State: "/run/kubox/containerd", Socket: "/run/kubox/containerd/containerd.sock",
			ShimPath: "/var/lib/kubox/bin/containerd-shim-runc-v2", RuncPath: "/var/lib/kubox/bin/runc",
			CNIBinDir: "/var/lib/kubox/bin", CNIConfDir: "/var/lib/kubox/agent/cni",
			SandboxImage: "localhost/kubox/pause:3.10", RestrictOOMScoreAdj: restrict,
		})
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := toml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("not valid TOML: %v\n%s", err, data)
		}
		plugins := doc["plugins"].(map[string]any)
		rt := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
		if rt["restrict_oom_score_adj"] != restrict {
			t.Errorf("restrict_oom_score_adj = %v, want %v", rt["restrict_oom_score_adj"], restrict)
		}
		if rt["netns_mounts_under_state_dir"] != true {
			t.Error("pod network namespaces must live under kubox's state dir")
		}
		runc := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)
		opts := runc["options"].(map[string]any)
		if runc["runtime_path"] != "/var/lib/kubox/bin/containerd-shim-runc-v2" || opts["BinaryName"] != "/var/lib/kubox/bin/runc" || opts["SystemdCgroup"] != false {
			t.Errorf("runc runtime: %v", runc)
		}
		if opts["Root"] != "/run/kubox/containerd/runc" {
			t.Errorf("runc state root %v, want it under kubox's state dir", opts["Root"])
		}
		if plugins["io.containerd.nri.v1.nri"].(map[string]any)["disable"] != true {
			t.Error("NRI enabled: its socket would land in the host's /run/nri")
		}
		if p := plugins["io.containerd.internal.v1.opt"].(map[string]any)["path"]; p != "/var/lib/kubox/containerd/opt" {
			t.Errorf("opt path %v, want it under kubox's root", p)
		}
		images := plugins["io.containerd.cri.v1.images"].(map[string]any)
		if images["pinned_images"].(map[string]any)["sandbox"] != "localhost/kubox/pause:3.10" {
			t.Errorf("sandbox image: %v", images)
		}
		if doc["grpc"].(map[string]any)["address"] != "/run/kubox/containerd/containerd.sock" {
			t.Errorf("grpc address: %v", doc["grpc"])
		}
		if strings.Contains(string(data), "/run/containerd") {
			t.Error("config refers to the host's containerd paths")
		}
	}
}
