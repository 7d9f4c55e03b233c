// Package netpol runs Kubernetes' own network-policy end-to-end specs
// (k8s.io/kubernetes/test/e2e/network/netpol, of the Kubernetes version in
// go.mod) against a real kubox node, through the upstream e2e framework.
//
// It is a package of its own because that framework keeps its settings in
// global state (framework.TestContext, flags registered on the command line,
// one ginkgo suite per process), which the other end-to-end tests must not
// share.
//
// Which specs run is a ginkgo focus/skip pair of regular expressions:
// KUBOX_NETPOL_FOCUS and KUBOX_NETPOL_SKIP replace the defaults below;
// KUBOX_NETPOL_FOCUS=all runs the whole set (`make test-netpol`). The test
// logs each spec's outcome and duration; ginkgo's own flags pass through
// (go test ... -args -ginkgo.v shows every spec's steps).
package netpol

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"

	"k8s.io/kubernetes/test/e2e/framework"
	// The specs: their ginkgo nodes register themselves on import.
	_ "k8s.io/kubernetes/test/e2e/network/netpol"
	imageutils "k8s.io/kubernetes/test/utils/image"

	"github.com/kubox/kubox/test/harness"
)

const (
	// AllFocus selects every spec of the package: the policy specs and the
	// API ones (which need no enforcement).
	AllFocus = `\[Feature:NetworkPolicy\]|Netpol API`

	// DefaultFocus is what CI runs (the full set takes too long for it, see
	// README's testing section): the API specs, and policy specs that
	// together cover each kind of rule the controller compiles (default deny
	// both ways, pod/namespace selectors with expressions, the default
	// namespace label, named and numbered ports, protocols, ipBlock with
	// except, policies added, updated, stacked and deleted, and pods and
	// namespaces relabelled under a policy).
	DefaultFocus = `Netpol API` +
		`|should support a 'default-deny-ingress' policy` +
		`|should support a 'default-deny-all' policy` +
		`|should enforce policy based on PodSelector or NamespaceSelector` +
		`|should enforce policy based on NamespaceSelector with MatchExpressions using default ns label` +
		`|should allow ingress access on one named port` +
		`|should allow egress access on one named port` +
		`|should enforce updated policy` +
		`|should allow ingress access from updated pod` +
		`|should deny ingress access to updated pod` +
		`|should enforce multiple, stacked policies with overlapping podSelectors` +
		`|should work with Ingress, Egress specified together` +
		`|should enforce except clause while egress access to server in CIDR block` +
		`|should stop enforcing policies after they are deleted` +
		`|should not allow access by TCP when a policy specifies only UDP` +
		`|should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'`

	// DefaultSkip leaves out the specs that send SCTP: kubox's test hosts
	// have no SCTP in their kernel (socket(AF_INET, SOCK_STREAM,
	// IPPROTO_SCTP) fails with EPROTONOSUPPORT), so agnhost can neither
	// serve nor connect over it. The two SCTP-policy specs that probe
	// only TCP still run.
	DefaultSkip = `Feature:SCTPConnectivity`
)

// TestMain registers the upstream framework's flags with their defaults
// (namespace deletion, timeouts, ...), as the upstream e2e suite does.
func TestMain(m *testing.M) {
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	m.Run()
}

// TestUpstreamNetworkPolicy starts a node, imports the agnhost image the
// specs run, and runs the selected specs against the node.
func TestUpstreamNetworkPolicy(t *testing.T) {
	env := harness.Require(t)
	agnhost := filepath.Join(env.Images, "agnhost.tar")
	if _, err := os.Stat(agnhost); err != nil {
		t.Fatalf("the specs' image is missing (make test-images builds it): %v", err)
	}
	focus, skip := DefaultFocus, DefaultSkip
	if v, ok := os.LookupEnv("KUBOX_NETPOL_FOCUS"); ok {
		focus = v
		if v == "all" {
			focus = AllFocus
		}
	}
	if v, ok := os.LookupEnv("KUBOX_NETPOL_SKIP"); ok {
		skip = v
	}

	n := harness.NewNode(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	harness.Phase(t, "start", func(t *testing.T) {
		n.Start()
		if err := n.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.ImportImage(ctx, "agnhost.tar"); err != nil {
			t.Fatalf("import the agnhost image: %v", err)
		}
		// The specs' pods name the image as upstream does and pull it only
		// if missing: the node has no registry to pull from.
		want := imageutils.GetE2EImage(imageutils.Agnhost)
		if _, err := n.Kubox(ctx, "ctr", "--address", filepath.Join(n.RunDir, "containerd", "containerd.sock"),
			"-n", "k8s.io", "images", "inspect", want); err != nil {
			t.Fatalf("the specs want image %s, which agnhost.tar did not name: %v", want, err)
		}
	})
	if t.Failed() {
		return
	}

	tc := &framework.TestContext
	tc.KubeConfig = n.Kubeconfig
	tc.Provider = "skeleton" // a cluster of its own: no cloud to ask
	tc.ReportDir = ""
	framework.AfterReadingAllFlags(tc)
	gomega.RegisterFailHandler(framework.Fail)

	suiteConfig, reporterConfig := framework.CreateGinkgoConfig()
	suiteConfig.FocusStrings = []string{focus}
	suiteConfig.SkipStrings = nil
	if skip != "" {
		suiteConfig.SkipStrings = []string{skip}
	}
	// Leave the node time to stop and clean up inside go test's deadline.
	if d, ok := t.Deadline(); ok {
		suiteConfig.Timeout = time.Until(d) - 3*time.Minute
	}
	reporterConfig.NoColor = true
	reporterConfig.JSONReport = filepath.Join(t.TempDir(), "report.json")
	begin := time.Now()
	passed := ginkgo.RunSpecs(t, "kubox: upstream network-policy specs", suiteConfig, reporterConfig)
	t.Logf("specs (focus %q, skip %q) ran in %s, passed=%v", focus, skip, time.Since(begin).Round(time.Second), passed)
	logSpecs(t, reporterConfig.JSONReport)
}

// logSpecs logs one line per spec that ran: outcome, duration, name, and
// the failure's message.
func logSpecs(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read ginkgo's report: %v", err)
		return
	}
	var reports []types.Report
	if err := json.Unmarshal(data, &reports); err != nil {
		t.Errorf("parse ginkgo's report %s: %v", path, err)
		return
	}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt || s.State == types.SpecStateSkipped {
				continue
			}
			line := fmt.Sprintf("%-7s %6s  %s", s.State, s.RunTime.Round(100*time.Millisecond), s.FullText())
			if s.Failure.Message != "" {
				line += "\n        " + s.Failure.Message
			}
			t.Log(line)
		}
	}
}
