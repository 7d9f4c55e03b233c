package main

import (
	"fmt"
	"os"

	containerdcmd "github.com/containerd/containerd/v2/cmd/containerd/command"
	ctrapp "github.com/containerd/containerd/v2/cmd/ctr/app"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	// Every plugin containerd ships with (CRI, overlayfs, runc v2 runtime, ...).
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
)

// Defaults the embedded tools use when the user has not said otherwise.
const (
	defaultAdminKubeconfig = "/etc/kubox/admin.kubeconfig"
	defaultContainerdSock  = "/run/kubox/containerd/containerd.sock"
)

// runKubectl is upstream kubectl; it talks to this box unless KUBECONFIG or
// --kubeconfig says otherwise.
func runKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" {
		if _, err := os.Stat(defaultAdminKubeconfig); err == nil {
			os.Setenv("KUBECONFIG", defaultAdminKubeconfig)
		}
	}
	os.Args = append([]string{"kubectl"}, args...)
	return cli.Run(kubectlcmd.NewDefaultKubectlCommand())
}

// runCtr is containerd's ctr, pointed at kubox's containerd.
func runCtr(args []string) int {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		os.Setenv("CONTAINERD_ADDRESS", defaultContainerdSock)
	}
	if err := ctrapp.New().Run(append([]string{"ctr"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "ctr: "+err.Error())
		return 1
	}
	return 0
}

// runContainerd is the containerd daemon; kubox server runs it as a child.
func runContainerd(args []string) int {
	if err := containerdcmd.App().Run(append([]string{"containerd"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "containerd: "+err.Error())
		return 1
	}
	return 0
}
