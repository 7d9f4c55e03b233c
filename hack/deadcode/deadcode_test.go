package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReplaceOnce(t *testing.T) {
	got, err := replaceOnce("f", []byte("a x b"), "x", "y")
	if err != nil || string(got) != "a y b" {
		t.Fatalf("one occurrence: %q, %v", got, err)
	}
	for _, src := range []string{"a b", "x x"} {
		if _, err := replaceOnce("f", []byte(src), "x", "y"); err == nil {
			t.Errorf("%q: replaced; want an error (the patch must apply exactly once)", src)
		}
	}
}

func TestActionNames(t *testing.T) {
	text := "Use .Outside {{if .HasFlags}}{{ $v.Name | f }}{{end}}{{.lower}}{{printf \"%s\" .Multi.Chain}}"
	got := actionNames(text)
	want := []string{"HasFlags", "Name", "Multi", "Chain"}
	if !slices.Equal(got, want) {
		t.Errorf("actionNames = %v, want %v", got, want)
	}
}

func TestTemplateNamesRefusesASourceWithoutTemplates(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "plain.go"), []byte("package x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := templateNames(map[string]string{"m": dir}, []templateSource{{"m", "*.go", "test"}})
	if err == nil || !strings.Contains(err.Error(), "no template names") {
		t.Errorf("err = %v; want one saying the source holds no template names", err)
	}
}

// The sources the build scans are where the Makefile's modules keep them,
// and they hold the methods kubectl's and ctr's help call.
func TestTemplateSourcesExist(t *testing.T) {
	dirs, err := moduleDirs(templateModules())
	if err != nil {
		t.Fatal(err)
	}
	names, err := templateNames(dirs, templateSources())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"LocalFlags", "HasAvailableSubCommands", "VisibleFlags", "VisibleCommands"} {
		if !slices.Contains(names, m) {
			t.Errorf("scanned names lack %s", m)
		}
	}
}

// A program built through the overlay calls the methods its templates name,
// refuses others, and is linked with unused methods dropped. Built without
// the overlay, the same program keeps them: so the check can fail.
func TestOverlayLetsTheLinkerDropMethods(t *testing.T) {
	goroot, err := goEnv("GOROOT")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	overlay, err := patchTemplate(goroot, out, []string{"Kept"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(struct{ Replace map[string]string }{overlay})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(out, "overlay.json")
	if err := os.WriteFile(overlayFile, data, 0o644); err != nil {
		t.Fatal(err)
	}

	prog := t.TempDir()
	files := map[string]string{
		"go.mod": "module probe\n\ngo 1.26\n",
		"main.go": `package main

import (
	"fmt"
	"os"
	"text/template"
)

type T struct{ Field string }

func (T) Kept() string    { return "kept" }
func (T) Dropped() string { return "dropped" }

func main() {
	for _, text := range os.Args[1:] {
		err := template.Must(template.New("").Parse(text)).Execute(os.Stdout, T{Field: "field"})
		if err != nil {
			fmt.Print("error: ", err)
		}
		fmt.Println()
	}
}
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(prog, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func(extra ...string) (bin, deps string) {
		bin = filepath.Join(t.TempDir(), "probe")
		args := append([]string{"build", "-ldflags=-dumpdep", "-o", bin}, extra...)
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Dir = prog
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go build %v: %v\n%s", extra, err, b)
		}
		return bin, string(b)
	}

	bin, deps := build("-overlay", overlayFile)
	if strings.Contains(deps, "<ReflectMethod>") {
		t.Error("built through the overlay, the program still reaches a method lookup by a variable name")
	}
	if !strings.Contains(deps, "main.T.Kept") || strings.Contains(deps, "main.T.Dropped") {
		t.Error("built through the overlay, the linker did not keep T.Kept alone")
	}
	run, err := exec.Command(bin, "{{.Kept}} {{.Field}}", "{{.Dropped}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(run)), "\n")
	if len(lines) != 2 || lines[0] != "kept field" || !strings.Contains(lines[1], "can't evaluate field Dropped") {
		t.Errorf("templates through the overlay printed %q; want %q, then an error naming Dropped", lines, "kept field")
	}

	_, deps = build()
	if !strings.Contains(deps, "main.T.Dropped") {
		t.Error("built without the overlay, T.Dropped was dropped too: this test no longer shows what the overlay does")
	}
}

// The go-cmp copy builds, and no longer calls reflect.Type.Method.
func TestPatchGoCmp(t *testing.T) {
	dirs, err := moduleDirs([]string{goCmpModule})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "go-cmp")
	if err := patchGoCmp(dirs[goCmpModule], dst); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dst, "cmp", "internal", "value", "name.go"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(src), goCmpTypeMethod) {
		t.Errorf("patched name.go still has %q", goCmpTypeMethod)
	}
	cmd := exec.Command("go", "build", "./...")
	cmd.Dir = dst
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the patched go-cmp: %v\n%s", err, b)
	}
}

// Every package in kubox's and containerd's builds that imports a template
// package has been looked at: a new one may call methods by names the
// overlay does not know.
func TestTemplateImportersReviewed(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{join .Imports \" \"}}{{end}}",
		"./cmd", "./embedded/containerd/daemon")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	reviewed := reviewedImporters()
	found := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		if slices.Contains(fields[1:], "text/template") || slices.Contains(fields[1:], "html/template") {
			found[fields[0]] = true
			if reviewed[fields[0]] == "" {
				t.Errorf("%s imports a template package and is not in reviewedImporters: read its templates, add them to templateSources if they call methods, then list it", fields[0])
			}
		}
	}
	for pkg := range reviewed {
		if !found[pkg] {
			t.Errorf("%s is in reviewedImporters but no longer imports a template package: drop it", pkg)
		}
	}
}
