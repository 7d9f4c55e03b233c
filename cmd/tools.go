package main

import (
	"fmt"
	"os"

	ctrapp "github.com/containerd/containerd/v2/cmd/ctr/app"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	"github.com/kubox/kubox/server"
)

// runKubectl is upstream kubectl; it talks to this box unless KUBECONFIG or
// --kubeconfig says otherwise.
func runKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" {
		if _, err := os.Stat(server.DefaultAdminKubeconfig); err == nil {
			os.Setenv("KUBECONFIG", server.DefaultAdminKubeconfig)
		}
	}
	os.Args = append([]string{"kubectl"}, args...)
	return cli.Run(kubectlcmd.NewDefaultKubectlCommand())
}

// runCtr is containerd's ctr, pointed at kubox's containerd.
func runCtr(args []string) int {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		os.Setenv("CONTAINERD_ADDRESS", server.LayoutOf(server.DefaultDataDir, server.DefaultRunDir).ContainerdSock)
	}
	if err := ctrapp.New().Run(append([]string{"ctr"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "ctr: "+err.Error())
		return 1
	}
	return 0
}
