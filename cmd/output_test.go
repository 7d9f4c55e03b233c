package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestOutputValidate(t *testing.T) {
	for _, o := range []output{"", "json"} {
		if err := o.Validate(); err != nil {
			t.Errorf("-o %q: %v", o, err)
		}
	}
	if err := output("yaml").Validate(); err == nil || err.Error() != `-o "yaml": want json or nothing` {
		t.Errorf("-o yaml: %v", err)
	}
}

func TestOutputPrint(t *testing.T) {
	v := map[string]any{"id": "abc", "n": 1}
	text := func(w io.Writer) error {
		_, err := io.WriteString(w, "ID  abc\n")
		return err
	}

	var b strings.Builder
	if err := output("json").Print(&b, v, func(io.Writer) error { t.Error("text printed with -o json"); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"id\": \"abc\",\n  \"n\": 1\n}\n"; b.String() != want {
		t.Errorf("json: %q, want %q", b.String(), want)
	}

	b.Reset()
	if err := output("").Print(&b, v, text); err != nil || b.String() != "ID  abc\n" {
		t.Errorf("text: %q, %v", b.String(), err)
	}
	boom := errors.New("boom")
	if err := output("").Print(&b, v, func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("text error: %v", err)
	}
}

// TestOutputFlagChecksBeforeRun: a wrong -o stops the verb before it does
// anything; -o json reaches it.
func TestOutputFlagChecksBeforeRun(t *testing.T) {
	for _, c := range []struct {
		arg     string
		ran     bool
		wantErr string
	}{{"json", true, ""}, {"yaml", false, `-o "yaml": want json or nothing`}} {
		ran := false
		cmd := &cobra.Command{Use: "verb", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
		o := addOutputFlag(cmd, "output format: json")
		cmd.SetArgs([]string{"-o", c.arg})
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if ran != c.ran || (err == nil) != (c.wantErr == "") || (err != nil && err.Error() != c.wantErr) {
			t.Errorf("-o %s: ran %v, error %v; want ran %v, error %q", c.arg, ran, err, c.ran, c.wantErr)
		}
		if c.ran && !o.JSON() {
			t.Errorf("-o json: %q", *o)
		}
	}
}
