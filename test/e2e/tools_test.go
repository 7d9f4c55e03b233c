package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubox/kubox/test/harness"
)

// toolCommand is how one embedded tool lists its subcommands in its help.
type toolCommand struct {
	tool    string         // kubox verb: kubectl or ctr
	section *regexp.Regexp // header of the block that lists subcommands
	entry   *regexp.Regexp // one listed subcommand; group 1 is its name
}

var embeddedTools = []toolCommand{
	{
		tool:    "kubectl",
		section: regexp.MustCompile(`(?m)^(Available Commands|[A-Z][A-Za-z ]*Commands[^:\n]*):$`),
		entry:   regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s{2,}\S`),
	},
	{
		tool:    "ctr",
		section: regexp.MustCompile(`(?m)^COMMANDS:$`),
		entry:   regexp.MustCompile(`^   ([a-z][a-z0-9-]*)[a-z0-9, -]*\s{2,}\S`),
	},
}

// subcommands returns the names a help text lists under its command sections.
func (tc toolCommand) subcommands(help string) []string {
	var names []string
	for _, loc := range tc.section.FindAllStringIndex(help, -1) {
		for _, line := range strings.Split(help[loc[1]:], "\n")[1:] {
			m := tc.entry.FindStringSubmatch(line)
			if m == nil {
				break
			}
			if m[1] != "help" {
				names = append(names, m[1])
			}
		}
	}
	return names
}

// TestEmbeddedToolsHelp walks the help of kubectl and ctr, two levels deep.
// Their help is rendered by text/template, which kubox's build lets look up
// only the method names hack/deadcode found in the templates kubox carries:
// a template calling another method would fail here with "executing".
func TestEmbeddedToolsHelp(t *testing.T) {
	env := harness.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	help := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, env.Bin, append(args, "--help")...).CombinedOutput()
		return string(out), err
	}
	for _, tc := range embeddedTools {
		t.Run(tc.tool, func(t *testing.T) {
			top, err := help(tc.tool)
			if err != nil {
				t.Fatalf("kubox %s --help: %v\n%s", tc.tool, err, top)
			}
			subs := tc.subcommands(top)
			if len(subs) < 10 {
				t.Fatalf("kubox %s --help lists %d subcommands (%v); want the full tree. Output:\n%s", tc.tool, len(subs), subs, top)
			}
			paths := [][]string{{tc.tool}}
			for _, s := range subs {
				paths = append(paths, []string{tc.tool, s})
			}
			var (
				mu     sync.Mutex
				walked int
				wg     sync.WaitGroup
				sem    = make(chan struct{}, 4)
			)
			check := func(path []string) []string {
				out, err := help(path...)
				mu.Lock()
				walked++
				mu.Unlock()
				if err != nil || strings.Contains(out, "executing \"") || strings.Contains(out, "can't evaluate") {
					t.Errorf("kubox %s --help: %v\n%s", strings.Join(path, " "), err, out)
					return nil
				}
				return tc.subcommands(out)
			}
			for _, p := range paths[1:] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					nested := check(p)
					<-sem
					for _, n := range nested {
						sem <- struct{}{}
						check(append(append([]string{}, p...), n))
						<-sem
					}
				}()
			}
			wg.Wait()
			t.Logf("kubox %s: %d help pages rendered", tc.tool, walked)
		})
	}
}

// assertEmbeddedKubectlTemplates runs the embedded kubectl's templates that
// need a server: explain's (on the apiserver's OpenAPI) and -o go-template.
// See TestEmbeddedToolsHelp for why they could fail.
func assertEmbeddedKubectlTemplates(ctx context.Context, t *testing.T, n *harness.Node) {
	t.Helper()
	kubectl := []string{"kubectl", "--kubeconfig", n.Kubeconfig}
	out, err := n.Kubox(ctx, append(kubectl, "explain", "pods.spec.containers")...)
	if err != nil || !strings.Contains(out, "FIELDS:") || !strings.Contains(out, "image\t<string>") {
		t.Errorf("kubox kubectl explain pods.spec.containers: %v\n%s", err, out)
	}
	out, err = n.Kubox(ctx, append(kubectl, "get", "namespace", "default", "-o", "go-template={{.metadata.name}} {{len .metadata.labels}}")...)
	if err != nil || out != "default 1" {
		t.Errorf("kubox kubectl get -o go-template: %q, %v; want %q", out, err, "default 1")
	}
}
