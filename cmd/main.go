// Command kubox is the whole kubox appliance in one binary. Besides its own
// verbs it answers to the names of the tools it carries (kubectl, ctr) when
// invoked under those names or as `kubox <tool>`.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kubox/kubox/server"
)

// version is kubox's own version, set at build time with -X main.version.
var version = "dev"

func main() {
	if tool, args, ok := multicall(os.Args); ok {
		os.Exit(tool(args))
	}
	if err := newRootCommand().Execute(); err != nil {
		var line *lineError
		if errors.As(err, &line) {
			fmt.Fprintln(os.Stderr, line.line)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "kubox: "+err.Error())
		code := 1
		// A box removed from its cluster has an exit status of its own,
		// on which systemd does not restart it.
		var removed *server.RemovedError
		if errors.As(err, &removed) {
			code = removed.ExitCode()
		}
		os.Exit(code)
	}
}

// lineError is an error a verb words itself: main prints line as it is,
// without the "kubox: " prefix, and exits 1.
type lineError struct{ line string }

func (e *lineError) Error() string { return e.line }

// multicall routes tools that bring their own command line parsers, so that
// cobra does not interpret their flags.
func multicall(argv []string) (func([]string) int, []string, bool) {
	tools := map[string]func([]string) int{
		"kubectl": runKubectl,
		"ctr":     runCtr,
	}
	if t, ok := tools[filepath.Base(argv[0])]; ok {
		return t, argv[1:], true
	}
	if len(argv) > 1 {
		if t, ok := tools[argv[1]]; ok {
			return t, argv[2:], true
		}
	}
	return nil, nil, false
}
