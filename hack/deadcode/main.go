// Command deadcode writes what `go build` needs so the Go linker can drop the
// methods a binary never calls: an -overlay file and a -modfile.
//
// The linker keeps every exported method of every reachable type as soon as
// one reachable function calls reflect's Method or MethodByName with a name
// it cannot see at compile time. In kubox two such callers are reachable:
// text/template's field lookup (kubectl's and ctr's help, kubectl's
// go-template output; containerd's help) and go-cmp's type printer (etcd's
// consistency check). Built around them, bin/kubox is 149.8 MiB instead of
// 170.5 and containerd 31.8 MB instead of 37.5.
//
// deadcode rewrites the two calls in copies of their sources:
//   - text/template looks methods up only by the names that appear in the
//     templates kubox carries (scanned from their sources below), each as a
//     constant MethodByName the linker can follow; another name is looked up
//     as a field or map key, as before. Templates run on data from JSON
//     (kubectl -o go-template) have no methods to call anyway.
//   - go-cmp prints an interface type's methods by position, not by name.
//
// text/template is patched through -overlay (a standard-library file); go-cmp
// through a replace in a copy of go.mod (-overlay cannot reach the module
// cache). The sources themselves are never touched.
//
//	go run ./hack/deadcode -o hack/out/deadcode
//	go build -overlay hack/out/deadcode/overlay.json -modfile hack/out/deadcode/go.mod ./cmd
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "deadcode:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("deadcode", flag.ContinueOnError)
	outDir := fs.String("o", "", "output directory (required); its previous content is replaced")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *outDir == "" || fs.NArg() != 0 {
		return errors.New("usage: deadcode -o DIR")
	}
	out, err := filepath.Abs(*outDir)
	if err != nil {
		return err
	}
	goroot, err := goEnv("GOROOT")
	if err != nil {
		return err
	}
	dirs, err := moduleDirs(templateModules())
	if err != nil {
		return err
	}
	root := dirs[""]
	names, err := templateNames(dirs, templateSources())
	if err != nil {
		return err
	}

	// Build into a sibling and swap it in, so a failed run leaves the
	// previous output whole.
	tmp := out + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	overlay, err := patchTemplate(goroot, tmp, names)
	if err != nil {
		return err
	}
	if err := patchGoCmp(dirs[goCmpModule], filepath.Join(tmp, "go-cmp")); err != nil {
		return err
	}
	// The modfile names the go-cmp copy by its final path.
	if err := writeModfile(root, tmp, filepath.Join(out, "go-cmp")); err != nil {
		return err
	}
	for file, written := range overlay {
		overlay[file] = filepath.Join(out, strings.TrimPrefix(written, tmp+string(filepath.Separator)))
	}
	data, err := json.MarshalIndent(struct{ Replace map[string]string }{overlay}, "", "\t")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "overlay.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Printf("deadcode: %s: text/template looks up %d method names; go-cmp prints interface methods by position\n", *outDir, len(names))
	return nil
}

// writeModfile copies the go.mod and go.sum in root into dir, with go-cmp
// replaced by the patched copy at cmpDir.
func writeModfile(root, dir, cmpDir string) error {
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return err
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	mod = fmt.Appendf(mod, "\n// Written by hack/deadcode: go-cmp without reflect's Method.\nreplace %s => %s\n", goCmpModule, cmpDir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), mod, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644)
}

func goEnv(name string) (string, error) {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleRoot is the root of kubox's module.
func moduleRoot() (string, error) {
	gomod, err := goEnv("GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside kubox's module: run from its checkout")
	}
	return filepath.Dir(gomod), nil
}

// moduleDirs returns where each module's source is, downloading it if
// needed (the version is the one go.mod requires), and under "" the root of
// kubox's own module.
func moduleDirs(modules []string) (map[string]string, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	args := append([]string{"mod", "download", "-json"}, modules...)
	cmd := exec.Command("go", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go mod download: %w", err)
	}
	dirs := map[string]string{"": root}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var m struct{ Path, Version, Dir, Error string }
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("go mod download: %w", err)
		}
		if m.Error != "" {
			return nil, fmt.Errorf("go mod download %s: %s", m.Path, m.Error)
		}
		dirs[m.Path] = m.Dir
	}
	for _, m := range modules {
		if dirs[m] == "" {
			return nil, fmt.Errorf("go mod download: no directory for %s", m)
		}
	}
	return dirs, nil
}
