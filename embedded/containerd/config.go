package containerd

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"text/template"
)

// configTemplate is containerd's config (version 3). Only what kubox needs
// differs from containerd's defaults.
var configTemplate = template.Must(template.New("containerd").Parse(`# Written by kubox on every start; edits are overwritten.
version = 3
root = {{printf "%q" .Root}}
state = {{printf "%q" .State}}

[grpc]
  address = {{printf "%q" .Socket}}

[ttrpc]
  address = {{printf "%q" .TTRPCSocket}}

[metrics]
  address = ""

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = {{printf "%q" .SandboxImage}}

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = {{.RestrictOOMScoreAdj}}
  # Pod network namespaces under kubox's state dir, not the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = {{printf "%q" .ShimPath}}
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = {{printf "%q" .RuncPath}}
        SystemdCgroup = false
        # runc's state under kubox's state dir, not at the host containerd's default.
        Root = {{printf "%q" .RuncRoot}}
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{{printf "%q" .CNIBinDir}}]
    conf_dir = {{printf "%q" .CNIConfDir}}

# Nothing of kubox's at the host containerd's default places: no NRI socket
# in /run/nri, no /opt/containerd.
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.internal.v1.opt"]
  path = {{printf "%q" .OptDir}}

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`))

type configData struct {
	Root, State, Socket, TTRPCSocket string
	SandboxImage                     string
	RestrictOOMScoreAdj              string
	ShimPath, RuncPath               string
	CNIBinDir, CNIConfDir            string
	RuncRoot, OptDir                 string
}

func renderConfig(c Config) ([]byte, error) {
	var b bytes.Buffer
	err := configTemplate.Execute(&b, configData{
		Root:                c.Root,
		State:               c.State,
		Socket:              c.Socket,
		TTRPCSocket:         c.Socket + ".ttrpc",
		SandboxImage:        c.SandboxImage,
		RestrictOOMScoreAdj: strconv.FormatBool(c.RestrictOOMScoreAdj),
		ShimPath:            c.ShimPath,
		RuncPath:            c.RuncPath,
		CNIBinDir:           c.CNIBinDir,
		CNIConfDir:          c.CNIConfDir,
		RuncRoot:            filepath.Join(c.State, "runc"),
		OptDir:              filepath.Join(c.Root, "opt"),
	})
	if err != nil {
		return nil, fmt.Errorf("render containerd config: %w", err)
	}
	return b.Bytes(), nil
}
