package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

const goCmpModule = "github.com/google/go-cmp"

// templateSource is a set of files holding text/template or html/template
// text that a binary built with the overlay may execute.
type templateSource struct {
	module string // "" is kubox's own module (dirs[""] is its root)
	glob   string // within the module
	user   string // who executes it, for errors and the reader
}

func templateSources() []templateSource {
	return []templateSource{
		{"k8s.io/kubectl", "pkg/util/templates/templates.go", "kubectl's help and usage"},
		{"k8s.io/kubectl", "pkg/explain/v2/templates/*.tmpl", "kubectl explain"},
		{"github.com/urfave/cli/v2", "template.go", "ctr's and containerd's help, docs and completion"},
		{"github.com/spf13/cobra", "*.go", "cobra's templates, where a command sets them"},
		{"github.com/containerd/containerd/v2", "contrib/apparmor/template.go", "containerd's AppArmor profile"},
		{"github.com/google/cel-go", "cel/templates/*", "cel-go's authoring prompt"},
		{"golang.org/x/net", "trace/*.go", "etcd's /debug/requests at log level debug"},
		{"", "embedded/containerd/*.go", "kubox's containerd config"},
	}
}

// reviewedImporters are the packages built into kubox or containerd that
// import text/template or html/template, each with why the method names its
// templates call are covered: scanned (templateSources), or none called.
// TestTemplateImportersReviewed fails when an upgrade brings another.
func reviewedImporters() map[string]string {
	const (
		scanned   = "scanned: see templateSources"
		funcsOnly = "executes templates on nil data: functions only"
	)
	return map[string]string{
		"github.com/containerd/containerd/v2/cmd/containerd/command": "oci-hook: " + funcsOnly,
		"github.com/containerd/containerd/v2/contrib/apparmor":       scanned,
		"github.com/containerd/containerd/v2/core/mount/manager":     "mount option formats: " + funcsOnly,
		"github.com/containerd/containerd/v2/internal/cri/server":    "CNI conf_template (kubox sets none): fields of a struct without methods",
		"github.com/containerd/containerd/v2/internal/fsview":        "mount checks: " + funcsOnly,
		"github.com/google/cel-go/cel":                               scanned,
		"github.com/kubox/kubox/embedded/containerd":                 scanned,
		"github.com/spf13/cobra":                                     scanned,
		"github.com/urfave/cli/v2":                                   scanned,
		"golang.org/x/net/trace":                                     scanned,
		"k8s.io/apiserver/pkg/server/routes":                         "HTMLEscapeString only",
		"k8s.io/cli-runtime/pkg/printers":                            "kubectl -o go-template: the user's template, run on objects decoded from JSON (maps: no methods)",
		"k8s.io/kubectl/pkg/explain/v2":                              scanned,
		"k8s.io/kubectl/pkg/util/templates":                          scanned,
	}
}

// templateModules lists the modules templateSources and the patches read.
func templateModules() []string {
	mods := []string{goCmpModule}
	for _, s := range templateSources() {
		if s.module != "" && !slices.Contains(mods, s.module) {
			mods = append(mods, s.module)
		}
	}
	return mods
}

var (
	templateAction = regexp.MustCompile(`(?s)\{\{(.*?)\}\}`)
	fieldName      = regexp.MustCompile(`\.([A-Z][A-Za-z0-9_]*)`)
)

// templateNames returns every exported name that follows a dot inside a
// template action in the sources: a superset of the methods they call (it
// holds field and map-key names too, which cost nothing to allow).
func templateNames(dirs map[string]string, sources []templateSource) ([]string, error) {
	set := map[string]bool{}
	for _, s := range sources {
		root := dirs[s.module]
		if root == "" {
			return nil, fmt.Errorf("templates for %s: no directory for module %q", s.user, s.module)
		}
		files, err := filepath.Glob(filepath.Join(root, s.glob))
		if err != nil {
			return nil, err
		}
		var found int
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("templates for %s: %w", s.user, err)
			}
			for _, name := range actionNames(string(data)) {
				set[name] = true
				found++
			}
		}
		if found == 0 {
			// A moved or renamed file would otherwise silently break a
			// template that calls a method.
			return nil, fmt.Errorf("templates for %s: no template names in %s/%s", s.user, s.module, s.glob)
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// actionNames returns the exported names after a dot in text's {{ }} actions.
func actionNames(text string) []string {
	var names []string
	for _, action := range templateAction.FindAllStringSubmatch(text, -1) {
		for _, m := range fieldName.FindAllStringSubmatch(action[1], -1) {
			names = append(names, m[1])
		}
	}
	return names
}
