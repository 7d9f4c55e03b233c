// Package configfile lets a YAML file set a command's flags: each key is a
// flag name, the command line wins, and an unknown key is an error, as k3s
// and kubeadm users expect of /etc/<tool>/config.yaml.
package configfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Apply sets every flag not given on the command line from the YAML file at
// path, whose keys are flag names. A missing file is fine unless the user
// named it (explicit); an unknown key is an error. The flag "config" itself
// cannot be set from the file.
func Apply(flags *pflag.FlagSet, path string, explicit bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("config file %s: not valid YAML: %w", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		fl := flags.Lookup(key)
		if fl == nil || key == "config" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the flags of 'kubox server --help')", path, key)
		}
		if fl.Changed {
			continue // the command line wins
		}
		if err := fl.Value.Set(configValue(values[key])); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// configValue renders a YAML value the way the flag would be typed.
func configValue(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	case float64:
		if t == float64(int64(t)) {
			return fmt.Sprint(int64(t))
		}
		return fmt.Sprint(t)
	case nil:
		return ""
	default:
		return fmt.Sprint(t)
	}
}
