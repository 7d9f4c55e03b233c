package configfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func flagSet() (*pflag.FlagSet, *string, *int, *bool, *[]string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cidr := fs.String("cluster-cidr", "10.42.0.0/16", "")
	port := fs.Int("https-port", 6443, "")
	agent := fs.Bool("disable-agent", false, "")
	labels := fs.StringSlice("node-label", nil, "")
	fs.String("config", "", "")
	return fs, cidr, port, agent, labels
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplySetsFlagsAndCommandLineWins(t *testing.T) {
	fs, cidr, port, agent, labels := flagSet()
	if err := fs.Parse([]string{"--https-port=7443"}); err != nil {
		t.Fatal(err)
	}
	p := write(t, "cluster-cidr: 10.50.0.0/16\nhttps-port: 9443\ndisable-agent: true\nnode-label: [a=b, c=d]\n")
	if err := Apply(fs, p, true); err != nil {
		t.Fatal(err)
	}
	if *cidr != "10.50.0.0/16" || *port != 7443 || !*agent || strings.Join(*labels, ";") != "a=b;c=d" {
		t.Fatalf("got cidr %s port %d agent %v labels %v", *cidr, *port, *agent, *labels)
	}
}

func TestApplyRefusesUnknownKeys(t *testing.T) {
	for _, body := range []string{"clustr-cidr: 10.0.0.0/8\n", "config: /other.yaml\n"} {
		fs, _, _, _, _ := flagSet()
		err := Apply(fs, write(t, body), true)
		if err == nil || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%q: err %v, want unknown key", body, err)
		}
	}
}

func TestApplyBadValueNamesKey(t *testing.T) {
	fs, _, _, _, _ := flagSet()
	err := Apply(fs, write(t, "https-port: lots\n"), true)
	if err == nil || !strings.Contains(err.Error(), `"https-port"`) {
		t.Fatalf("err %v, want it to name the key", err)
	}
}

func TestApplyMissingFile(t *testing.T) {
	fs, _, _, _, _ := flagSet()
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if err := Apply(fs, missing, false); err != nil {
		t.Errorf("default path missing: %v, want nil", err)
	}
	if err := Apply(fs, missing, true); err == nil {
		t.Error("named file missing: want an error")
	}
}

func TestApplyInvalidYAML(t *testing.T) {
	fs, _, _, _, _ := flagSet()
	if err := Apply(fs, write(t, "a: [\n"), true); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
		t.Fatalf("err %v", err)
	}
}
