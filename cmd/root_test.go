package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpHasNoLibraryFlags: no verb's help offers component-base's
// --version (registered on pflag.CommandLine by an init), and `kubox
// version` still prints the versions.
func TestHelpHasNoLibraryFlags(t *testing.T) {
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.DisableFlagParsing {
			return // kubectl, ctr: their own parsers
		}
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(newRootCommand(), nil)
	if len(paths) < 20 {
		t.Fatalf("found only %d commands: %v", len(paths), paths)
	}
	for _, p := range paths {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{}, p...), "--help"))
		if err := root.Execute(); err != nil {
			t.Fatalf("kubox %s --help: %v", strings.Join(p, " "), err)
		}
		if !strings.Contains(out.String(), "Usage:") {
			t.Errorf("kubox %s --help printed no usage:\n%s", strings.Join(p, " "), out.String())
		}
		if strings.Contains(out.String(), "--version") {
			t.Errorf("kubox %s --help offers --version:\n%s", strings.Join(p, " "), out.String())
		}
	}

	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil || !strings.HasPrefix(out.String(), "kubox ") || !strings.Contains(out.String(), "etcd") {
		t.Errorf("kubox version: %v\n%s", err, out.String())
	}
}
