// Package flags feeds kubox's settings into upstream components through
// their own option structs and flag sets, the one interface every upstream
// component keeps stable, without running their cobra commands (which install
// process-wide signal handlers).
package flags

import (
	"fmt"
	"sort"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Args renders a map of flag name to value as --name=value, sorted so logs
// and tests are stable.
func Args(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, "--"+k+"="+m[k])
	}
	return out
}

// Parse applies args to the named flag sets of an upstream component.
func Parse(component string, fss cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	for _, name := range fss.Order {
		fs.AddFlagSet(fss.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags: %w", component, err)
	}
	return nil
}
