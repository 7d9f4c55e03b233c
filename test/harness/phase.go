package harness

import (
	"testing"
	"time"
)

// Phase runs one phase of an end-to-end story as the subtest name of t, so
// a failure names its phase ("--- FAIL: TestJoinThreeBoxes/promote"). The
// phases of a story build on each other: when this one fails, Phase stops t
// and the later ones do not run (and -run with a phase's name alone skips
// the phases it needs: run the whole story). It logs the phase's duration
// on t, so a failed story shows how long each phase before it took.
//
// Resources that later phases use (nodes, namespaces, t.Cleanup, t.TempDir)
// must be made with the parent's t: a subtest's cleanups run when the phase
// ends.
func Phase(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	begin := time.Now()
	ok := t.Run(name, f)
	t.Logf("%-40s %s", name, time.Since(begin).Round(100*time.Millisecond))
	if !ok {
		t.FailNow()
	}
}
