// Command mkimage writes a single-layer linux image as an OCI image-layout tar
// archive that containerd imports and names by itself (`ctr images import`,
// or client.Import with no naming options).
//
// kubox has no registry to pull from, so the pause image it embeds and the
// images the end-to-end tests run are built from local files with this tool:
//
//	mkimage -o pause.tar -name localhost/kubox/pause:3.10 \
//	    -file /pause=hack/out/pause/pause -entrypoint '["/pause"]' -user 65535:65535
//
// Every timestamp in the output is the Unix epoch, so the same inputs always
// give the same bytes and the same image digest.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	spec, out, err := parseArgs(args)
	if err != nil {
		return err
	}
	if err := writeArchive(out, spec); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// jsonList is a flag holding a JSON array of strings, so that arguments with
// spaces survive the Makefile and the shell unchanged.
type jsonList struct{ v []string }

func (j *jsonList) String() string {
	b, _ := json.Marshal(j.v)
	return string(b)
}

func (j *jsonList) Set(s string) error {
	if err := json.Unmarshal([]byte(s), &j.v); err != nil {
		return fmt.Errorf("want a JSON array of strings: %w", err)
	}
	return nil
}

func parseArgs(args []string) (imageSpec, string, error) {
	var (
		spec                     imageSpec
		files, links, dirs, envs listFlag
		entrypoint, cmd          jsonList
		out, platform            string
	)
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.StringVar(&out, "o", "", "output archive (required)")
	fs.StringVar(&spec.Name, "name", "", "image name with an explicit tag, e.g. localhost/kubox/pause:3.10 (required)")
	fs.StringVar(&platform, "platform", "linux/amd64", "image platform OS/ARCH")
	fs.Var(&files, "file", "DST=SRC: put the content and permission bits of host file SRC at DST (repeatable)")
	fs.Var(&links, "symlink", "DST=TARGET: a symbolic link at DST pointing at TARGET (repeatable)")
	fs.Var(&dirs, "dir", "DST[=MODE]: a directory, MODE in octal, default 0755 (repeatable)")
	fs.Var(&envs, "env", "KEY=VALUE in the image config (repeatable; default PATH only)")
	fs.Var(&entrypoint, "entrypoint", `entrypoint as a JSON array, e.g. '["/pause"]'`)
	fs.Var(&cmd, "cmd", `default command as a JSON array`)
	fs.StringVar(&spec.User, "user", "", "user[:group] the image runs as")
	fs.StringVar(&spec.WorkingDir, "workdir", "", "working directory")
	if err := fs.Parse(args); err != nil {
		return imageSpec{}, "", err
	}
	if fs.NArg() != 0 {
		return imageSpec{}, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if out == "" || spec.Name == "" {
		return imageSpec{}, "", errors.New("-o and -name are required")
	}
	os, arch, ok := strings.Cut(platform, "/")
	if !ok || os == "" || arch == "" {
		return imageSpec{}, "", fmt.Errorf("platform %q: want OS/ARCH", platform)
	}
	spec.OS, spec.Arch = os, arch
	spec.Entrypoint, spec.Cmd, spec.Env = entrypoint.v, cmd.v, envs

	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || src == "" {
			return imageSpec{}, "", fmt.Errorf("-file %q: want DST=SRC", f)
		}
		spec.Entries = append(spec.Entries, entry{Path: dst, Type: fileEntry, Source: src})
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok || target == "" {
			return imageSpec{}, "", fmt.Errorf("-symlink %q: want DST=TARGET", l)
		}
		spec.Entries = append(spec.Entries, entry{Path: dst, Type: symlinkEntry, Target: target})
	}
	for _, d := range dirs {
		dst, modeStr, hasMode := strings.Cut(d, "=")
		mode := int64(0o755)
		if hasMode {
			m, err := strconv.ParseInt(modeStr, 8, 32)
			if err != nil || m < 0 || m > 0o7777 {
				return imageSpec{}, "", fmt.Errorf("-dir %q: mode must be octal, at most 7777", d)
			}
			mode = m
		}
		spec.Entries = append(spec.Entries, entry{Path: dst, Type: dirEntry, Mode: mode})
	}
	return spec, out, nil
}
