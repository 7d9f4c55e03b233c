package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kubox/kubox/internal/configfile"
	"github.com/kubox/kubox/server"
)

// serverOpts let a verb read `kubox server`'s configuration as that server
// would: the verb's copies of server flags, given on the command line, win
// over the config file, which wins over server.DefaultConfig().
type serverOpts struct {
	configFile string
	shared     []sharedFlag
}

// sharedFlag is a server flag that a verb takes too, under name (the
// server flag's own name unless server says otherwise), with its own help.
type sharedFlag struct {
	name, usage string
	server      string // "" = name
}

func (s sharedFlag) serverName() string {
	if s.server != "" {
		return s.server
	}
	return s.name
}

// addServerOpts registers --config and the shared flags on fs. Each shared
// flag has the type and default of the server flag it stands for.
func addServerOpts(fs *pflag.FlagSet, shared ...sharedFlag) *serverOpts {
	o := &serverOpts{shared: shared}
	fs.StringVarP(&o.configFile, "config", "c", server.DefaultConfigFile, "kubox config file (YAML; the keys of 'kubox server')")
	defs := serverFlagSet(newServerFlags())
	for _, s := range shared {
		def := defs.Lookup(s.serverName())
		if def == nil {
			panic("kubox server has no flag --" + s.serverName())
		}
		// def.Value writes into a throwaway serverFlags: load reads what
		// the command line gave through the flag, not that copy.
		fs.AddFlag(&pflag.Flag{Name: s.name, Usage: s.usage, Value: def.Value, DefValue: def.DefValue, NoOptDefVal: def.NoOptDefVal})
	}
	return o
}

func serverFlagSet(f *serverFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	f.register(fs)
	return fs
}

// load returns the server flags as cmd's command line and the config file
// set them, with an absolute data dir.
func (o *serverOpts) load(cmd *cobra.Command) (*serverFlags, error) {
	f := newServerFlags()
	full := serverFlagSet(f)
	for _, s := range o.shared {
		if fl := cmd.Flags().Lookup(s.name); fl != nil && fl.Changed {
			if err := full.Set(s.serverName(), fl.Value.String()); err != nil {
				return nil, fmt.Errorf("--%s: %w", s.name, err)
			}
		}
	}
	if err := configfile.Apply(full, o.configFile, cmd.Flags().Changed("config")); err != nil {
		return nil, err
	}
	dd, err := filepath.Abs(f.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %q: %w", f.cfg.DataDir, err)
	}
	f.cfg.DataDir = dd
	return f, nil
}

// paths is the layout of the loaded data and run dirs.
func (f *serverFlags) paths() server.Paths { return f.cfg.Paths() }
