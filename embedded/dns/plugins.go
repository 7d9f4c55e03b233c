package dns

// The CoreDNS plugins kubox builds in (listed in Plugins). Each registers
// itself with caddy in its init; CoreDNS's core/plugin package, which would
// pull in every plugin and its cloud SDKs, is deliberately not imported.
import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// kubox_access (access.go) goes first in the plugin chain, so a refused
// query reaches nothing else. Directives is the compiled-in plugin order;
// adding a name before any server is set up is how CoreDNS takes plugins
// built outside its tree.
func init() {
	plugin.Register(accessDirective, setupAccess)
	dnsserver.Directives = append([]string{accessDirective}, dnsserver.Directives...)
}
