package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// output is a verb's -o flag: "json", or "" for the verb's own text.
type output string

// addOutputFlag registers -o/--output on cmd and checks it before cmd runs
// (PreRunE), so a wrong format stops the verb before it does anything.
func addOutputFlag(cmd *cobra.Command, usage string) *output {
	o := new(output)
	cmd.Flags().StringVarP((*string)(o), "output", "o", "", usage)
	cmd.PreRunE = func(*cobra.Command, []string) error { return o.Validate() }
	return o
}

// Validate refuses a format other than json.
func (o output) Validate() error {
	if o != "" && o != "json" {
		return fmt.Errorf("-o %q: want json or nothing", string(o))
	}
	return nil
}

// JSON reports whether -o json was given.
func (o output) JSON() bool { return o == "json" }

// Print writes v as indented JSON with -o json, else the verb's text.
func (o output) Print(w io.Writer, v any, text func(io.Writer) error) error {
	if o.JSON() {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(w)
}
