package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"
)

// Plugins are the CoreDNS plugins built into kubox (see plugins.go) that
// an operator's server blocks may use (kubox adds its own access check to
// every block). The loop plugin is left out on
// purpose: on finding a loop it calls log.Fatalf, which in-process would
// take down the whole node (etcd, apiserver, kubelet) and, under systemd,
// crash-loop it; Upstreams drops the loops kubox can see instead.
var Plugins = []string{"bind", "cache", "errors", "forward", "health", "hosts", "kubernetes", "log", "ready", "reload"}

// Corefile renders the Corefile kubox runs: the cluster zone block, then
// the operator's extra server blocks (already validated), each bound to the
// node's address like the main one.
func (d *DNS) Corefile(upstreams []string, extra []caddyfile.ServerBlock) []byte {
	c := d.cfg
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by kubox at start; edit %s instead (extra server blocks).\n", c.OverrideFile)
	fmt.Fprintf(&b, ".:%d {\n", c.Port)
	fmt.Fprintf(&b, "    bind %s\n", c.NodeIP)
	b.WriteString(d.accessLine())
	b.WriteString("    errors\n")
	fmt.Fprintf(&b, "    kubernetes %s in-addr.arpa ip6.arpa {\n", c.ClusterDomain)
	fmt.Fprintf(&b, "        kubeconfig %s\n", quote(c.Kubeconfig))
	b.WriteString("        pods insecure\n")
	b.WriteString("        fallthrough in-addr.arpa ip6.arpa\n")
	b.WriteString("    }\n")
	if c.HostsFile != "" {
		// The box's own names (/etc/hosts), as the host itself resolves them.
		fmt.Fprintf(&b, "    hosts %s {\n        fallthrough\n    }\n", quote(c.HostsFile))
	}
	if len(upstreams) > 0 {
		fmt.Fprintf(&b, "    forward . %s {\n        max_concurrent 1000\n    }\n", strings.Join(upstreams, " "))
	}
	// Cluster answers come from the plugin's watch of the API: caching them
	// would only delay changes (a scaled headless Service) by the TTL.
	fmt.Fprintf(&b, "    cache 30 {\n        disable success %[1]s\n        disable denial %[1]s\n    }\n", c.ClusterDomain)
	fmt.Fprintf(&b, "    reload %s\n", c.ReloadInterval)
	b.WriteString("}\n")
	for _, sb := range extra {
		b.WriteString("\n")
		writeBlock(&b, sb, c.NodeIP, c.Port, d.accessLine())
	}
	return b.Bytes()
}

// accessLine is the kubox_access line of every server block: who may ask
// besides the cluster's Nodes (see access.go).
func (d *DNS) accessLine() string {
	c := d.cfg
	nets := []string{"127.0.0.0/8", "::1", c.NodeIP.String()}
	if c.ClusterCIDR != nil {
		nets = append(nets, c.ClusterCIDR.String())
	}
	nets = append(nets, c.AllowCIDRs...)
	return fmt.Sprintf("    %s %s\n", accessDirective, strings.Join(nets, " "))
}

// writeBlock prints a parsed server block back as Corefile text, adding the
// node's bind address and port. Directive order does not matter to CoreDNS
// (plugins run in the compiled-in order), so blocks are printed in that
// order.
func writeBlock(b *bytes.Buffer, sb caddyfile.ServerBlock, ip net.IP, port int, access string) {
	keys := make([]string, len(sb.Keys))
	for i, k := range sb.Keys {
		keys[i] = strings.TrimSuffix(strings.TrimPrefix(k, "dns://"), ":"+strconv.Itoa(port)) + ":" + strconv.Itoa(port)
	}
	fmt.Fprintf(b, "%s {\n    bind %s\n", strings.Join(keys, " "), ip)
	b.WriteString(access)
	for _, dir := range dnsserver.Directives {
		toks, ok := sb.Tokens[dir]
		if !ok {
			continue
		}
		depth := 1
		for i, t := range toks {
			if t.Text == "}" {
				depth--
			}
			if i == 0 || t.Line != toks[i-1].Line {
				if i > 0 {
					b.WriteString("\n")
				}
				b.WriteString(strings.Repeat("    ", depth))
			} else {
				b.WriteString(" ")
			}
			b.WriteString(quote(t.Text))
			if t.Text == "{" {
				depth++
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("}\n")
}

// quote returns a Corefile token for s, quoted when it would not parse as
// one token.
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\"'`#") {
		return s
	}
	return strconv.Quote(s)
}

// ParseOverride reads the operator's extra server blocks (a Corefile
// fragment, e.g. stub zones for the site's own DNS) from path. A missing
// file means none. Every error names the file and line and says what to do.
func ParseOverride(path string, port int, clusterDomain string) ([]caddyfile.ServerBlock, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read DNS config %s: %w", path, err)
	}
	valid := append([]string(nil), Plugins...)
	sort.Strings(valid)
	blocks, err := caddyfile.Parse(path, bytes.NewReader(data), dnsserver.Directives)
	if err != nil {
		return nil, fmt.Errorf("DNS config %s: %v (it holds Corefile server blocks: a zone and `{` on one line, plugin lines such as `forward . 192.0.2.53`, then `}`)", path, err)
	}
	for _, sb := range blocks {
		first := blockLine(sb)
		for _, k := range sb.Keys {
			if strings.Contains(k, "://") && !strings.HasPrefix(k, "dns://") {
				return nil, fmt.Errorf("DNS config %s:%d: zone %q: only plain DNS zones are served; remove the %q prefix", path, first, k, k[:strings.Index(k, "://")+3])
			}
			host, p, err := net.SplitHostPort(strings.TrimPrefix(k, "dns://"))
			if err == nil && p != strconv.Itoa(port) {
				return nil, fmt.Errorf("DNS config %s:%d: zone %q names port %s: kubox serves every zone on its DNS port %d; remove the port", path, first, k, p, port)
			} else if err != nil {
				host = strings.TrimPrefix(k, "dns://")
			}
			z := strings.TrimSuffix(strings.ToLower(host), ".")
			if z == "" || z == strings.ToLower(strings.TrimSuffix(clusterDomain, ".")) {
				return nil, fmt.Errorf("DNS config %s:%d: zone %q is kubox's own (the root or the cluster domain); add blocks for other zones only (stub zones such as site.example)", path, first, k)
			}
		}
		for dir, toks := range sb.Tokens {
			if dir == "bind" {
				return nil, fmt.Errorf("DNS config %s:%d: remove `bind`: kubox binds every zone to the node address", path, toks[0].Line)
			}
			if !slices.Contains(Plugins, dir) {
				return nil, fmt.Errorf("DNS config %s:%d: plugin %q is not built into kubox (available: %s)", path, toks[0].Line, dir, strings.Join(valid, ", "))
			}
		}
		if len(sb.Tokens) == 0 {
			return nil, fmt.Errorf("DNS config %s:%d: block %s is empty; give it a plugin such as `forward . 192.0.2.53`", path, first, strings.Join(sb.Keys, " "))
		}
	}
	return blocks, nil
}

func blockLine(sb caddyfile.ServerBlock) int {
	line := 0
	for _, toks := range sb.Tokens {
		if len(toks) > 0 && (line == 0 || toks[0].Line < line) {
			line = toks[0].Line
		}
	}
	return line
}

// Upstreams reads the nameservers of a resolv.conf and drops the ones that
// would send queries back to this DNS server (its own address and port, or
// the cluster DNS Service address): the loop the CoreDNS loop plugin would
// otherwise find. Loopback resolvers stay: kubox runs in the host's network
// namespace, so 127.0.0.53 is the host's resolver, not a pod's own
// loopback. dropped lists what was left out. A missing file (an
// air-gapped box may have none) means no upstreams.
func Upstreams(resolvConf string, self net.IP, port int, clusterDNS net.IP) (ups, dropped []string, err error) {
	f, err := os.Open(resolvConf)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read upstream resolvers: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ip := net.ParseIP(strings.SplitN(fields[1], "%", 2)[0])
		if ip == nil {
			continue
		}
		if ip.Equal(clusterDNS) || (port == 53 && (ip.Equal(self) || ip.IsUnspecified())) {
			dropped = append(dropped, fields[1])
			continue
		}
		ups = append(ups, fields[1])
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", resolvConf, err)
	}
	return ups, dropped, nil
}

// PodResolvConf picks the resolv.conf the kubelet hands to pods (dnsPolicy
// Default, and search domains for every pod), as kubeadm does: when
// resolvConf names only loopback resolvers (a local stub such as
// systemd-resolved's 127.0.0.53, which a pod cannot reach) and fallback
// exists, fallback; otherwise resolvConf.
func PodResolvConf(resolvConf, fallback string) string {
	ups, _, err := Upstreams(resolvConf, nil, 0, nil)
	if err != nil || len(ups) == 0 {
		return resolvConf
	}
	for _, u := range ups {
		if ip := net.ParseIP(strings.SplitN(u, "%", 2)[0]); ip != nil && !ip.IsLoopback() {
			return resolvConf
		}
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	return resolvConf
}
