package netpol

import (
	"regexp"
	"strings"
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"

	"k8s.io/kubernetes/test/e2e/framework"
)

// selected lists the full text of the specs a focus and skip select,
// without running any (a ginkgo dry run of the imported specs).
func selected(focus, skip string) []string {
	suiteConfig, _ := framework.CreateGinkgoConfig()
	suiteConfig.FocusStrings, suiteConfig.SkipStrings = []string{focus}, []string{skip}
	var names []string
	for _, s := range ginkgo.PreviewSpecs("netpol selection", suiteConfig).SpecReports {
		if s.LeafNodeType == types.NodeTypeIt && s.State != types.SpecStateSkipped {
			names = append(names, s.FullText())
		}
	}
	return names
}

// TestSelection checks the focus strings against the specs of the
// Kubernetes version in go.mod: a spec renamed or removed upstream must not
// silently drop out of the run.
func TestSelection(t *testing.T) {
	all := selected(AllFocus, DefaultSkip)
	def := selected(DefaultFocus, DefaultSkip)
	t.Logf("all: %d specs, default: %d", len(all), len(def))
	if len(all) < 40 || len(def) >= len(all) {
		t.Fatalf("focus selects %d specs in all and %d by default: want the whole package (40+) and a subset", len(all), len(def))
	}
	for _, alt := range strings.Split(DefaultFocus, "|") {
		re := regexp.MustCompile(alt)
		found := false
		for _, name := range def {
			found = found || re.MatchString(name)
		}
		if !found {
			t.Errorf("default focus %q matches no spec", alt)
		}
	}
	// The skip leaves out exactly the specs that need SCTP sockets; those
	// that only name SCTP in a policy and probe TCP stay in.
	skipped := selected(AllFocus, "^$")
	if n := len(skipped) - len(all); n != 3 {
		t.Errorf("the SCTP skip drops %d specs, want the 3 SCTP-connectivity ones", n)
	}
	sctpPolicy := 0
	for _, name := range all {
		if strings.Contains(name, "protocol: SCTP") || strings.Contains(name, "allowing SCTP") {
			sctpPolicy++
		}
	}
	if sctpPolicy != 2 {
		t.Errorf("%d specs with SCTP policies over TCP probes selected, want 2", sctpPolicy)
	}
}
