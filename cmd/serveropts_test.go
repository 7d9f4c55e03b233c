package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/kubox/kubox/server"
)

// loadWith runs a parent command whose persistent flags are shared with
// `kubox server` (as the snapshot and token verbs have them) and returns
// what its child loaded.
func loadWith(t *testing.T, args ...string) (*serverFlags, error) {
	t.Helper()
	parent := &cobra.Command{Use: "verb"}
	opts := addServerOpts(parent.PersistentFlags(),
		sharedFlag{name: "data-dir", usage: "data dir"},
		sharedFlag{name: "etcd-client-port", usage: "etcd port"},
		sharedFlag{name: "key-file", server: "snapshot-key-file", usage: "key"},
		sharedFlag{name: "disable-agent", usage: "no agent"},
	)
	var got *serverFlags
	var loadErr error
	parent.AddCommand(&cobra.Command{Use: "child", RunE: func(cmd *cobra.Command, _ []string) error {
		got, loadErr = opts.load(cmd)
		return nil
	}})
	parent.SetArgs(append([]string{"child"}, args...))
	parent.SetOut(new(strings.Builder))
	if err := parent.Execute(); err != nil {
		t.Fatalf("verb %v: %v", args, err)
	}
	return got, loadErr
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadFlagBeatsFileBeatsDefault: a verb's flag given on the command
// line wins over the config file, which wins over server.DefaultConfig().
func TestLoadFlagBeatsFileBeatsDefault(t *testing.T) {
	cfgFile := writeConfig(t, "data-dir: /from/file\netcd-client-port: 1111\nhttps-port: 7443\nsnapshot-key-file: /file.key\n")
	f, err := loadWith(t, "--config", cfgFile, "--etcd-client-port", "2222", "--key-file", "/flag.key", "--disable-agent")
	if err != nil {
		t.Fatal(err)
	}
	def := server.DefaultConfig()
	c := f.cfg
	for _, x := range []struct {
		what      string
		got, want any
	}{
		{"etcd-client-port (flag over file)", c.EtcdClientPort, 2222},
		{"snapshot-key-file (flag --key-file over file)", c.SnapshotKeyFile, "/flag.key"},
		{"disable-agent (flag over default)", c.DisableAgent, true},
		{"data-dir (file over the verb's default)", c.DataDir, "/from/file"},
		{"https-port (file; not a flag of the verb)", c.HTTPSPort, 7443},
		{"kubelet-port (default)", c.KubeletPort, def.KubeletPort},
		{"run-dir (default)", c.RunDir, def.RunDir},
	} {
		if x.got != x.want {
			t.Errorf("%s: %v, want %v", x.what, x.got, x.want)
		}
	}
	if got, want := f.paths().Lock, filepath.Join("/from/file", "kubox.lock"); got != want {
		t.Errorf("lock %s, want %s", got, want)
	}
}

func TestLoadDefaultsWithoutConfigFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	f, err := loadWith(t, "--config", missing)
	if err == nil || !strings.Contains(err.Error(), "read config file") {
		t.Errorf("named config file missing: %v, want an error", err)
	}
	// The default config file (not named on the command line) may be
	// missing: then the defaults hold.
	parent := &cobra.Command{Use: "verb"}
	opts := addServerOpts(parent.Flags(), sharedFlag{name: "data-dir", usage: "data dir"})
	opts.configFile = missing
	if f, err = opts.load(parent); err != nil {
		t.Fatal(err)
	}
	def := server.DefaultConfig()
	if f.cfg.DataDir != server.DefaultDataDir || f.cfg.EtcdClientPort != def.EtcdClientPort || f.cfg.SnapshotKeyFile != def.SnapshotKeyFile {
		t.Errorf("defaults: data dir %s, etcd port %d, key %s", f.cfg.DataDir, f.cfg.EtcdClientPort, f.cfg.SnapshotKeyFile)
	}
}

func TestLoadMakesDataDirAbsoluteAndRefusesUnknownKeys(t *testing.T) {
	f, err := loadWith(t, "--config", writeConfig(t, ""), "--data-dir", "rel/dir")
	if err != nil {
		t.Fatal(err)
	}
	if wd, _ := os.Getwd(); f.cfg.DataDir != filepath.Join(wd, "rel/dir") {
		t.Errorf("data dir %s, want it absolute under %s", f.cfg.DataDir, wd)
	}
	if _, err := loadWith(t, "--config", writeConfig(t, "data-dri: /x\n")); err == nil || !strings.Contains(err.Error(), "data-dri") {
		t.Errorf("unknown key: %v", err)
	}
}

// TestSharedFlagsTakeServerDefaults: a verb's copy of a server flag shows
// the server's default and type in its help.
func TestSharedFlagsTakeServerDefaults(t *testing.T) {
	cmd := &cobra.Command{Use: "verb"}
	addServerOpts(cmd.Flags(),
		sharedFlag{name: "data-dir", usage: "u"}, sharedFlag{name: "etcd-client-port", usage: "u"},
		sharedFlag{name: "key-file", server: "snapshot-key-file", usage: "u"}, sharedFlag{name: "disable-agent", usage: "u"})
	def := server.DefaultConfig()
	for name, want := range map[string]string{
		"data-dir": def.DataDir, "etcd-client-port": "2379", "key-file": def.SnapshotKeyFile, "disable-agent": "false",
		"config": server.DefaultConfigFile,
	} {
		if fl := cmd.Flags().Lookup(name); fl == nil || fl.DefValue != want {
			t.Errorf("--%s: %+v, want default %q", name, fl, want)
		}
	}
	if typ := cmd.Flags().Lookup("etcd-client-port").Value.Type(); typ != "int" {
		t.Errorf("--etcd-client-port is a %s", typ)
	}
	if fl := cmd.Flags().Lookup("disable-agent"); fl.NoOptDefVal != "true" {
		t.Errorf("--disable-agent needs a value: %+v", fl)
	}
}
