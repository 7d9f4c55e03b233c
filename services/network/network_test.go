package network

import (
	"encoding/json"
	"errors"
	"testing"
)

func lookPath(found ...string) func(string) (string, error) {
	return func(name string) (string, error) {
		for _, f := range found {
			if f == name {
				return "/usr/sbin/" + name, nil
			}
		}
		return "", errors.New("not found")
	}
}

type conflist struct {
	CNIVersion string           `json:"cniVersion"`
	Name       string           `json:"name"`
	Plugins    []map[string]any `json:"plugins"`
}

func TestConflistFollowsTheHostsMasqueradeTools(t *testing.T) {
	for _, tc := range []struct {
		tools       []string
		wantBackend string
	}{
		{[]string{"nft", "iptables"}, "nftables"},
		{[]string{"iptables"}, "iptables"},
		{nil, "none"},
	} {
		n := New(Config{NodeName: "n", IPAMDir: "/var/lib/kubox/cni/networks", LookPath: lookPath(tc.tools...)})
		data, backend, err := n.conflist("10.42.3.0/24")
		if err != nil {
			t.Fatal(err)
		}
		if backend != tc.wantBackend {
			t.Errorf("tools %v: backend %q, want %q", tc.tools, backend, tc.wantBackend)
		}
		var c conflist
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("conflist is not JSON: %v\n%s", err, data)
		}
		if c.CNIVersion != "1.0.0" || c.Name != "kubox" || len(c.Plugins) == 0 {
			t.Fatalf("conflist: %+v", c)
		}
		bridge := c.Plugins[0]
		ipam := bridge["ipam"].(map[string]any)
		ranges := ipam["ranges"].([]any)[0].([]any)[0].(map[string]any)
		if bridge["type"] != "bridge" || bridge["bridge"] != "kubox0" || ranges["subnet"] != "10.42.3.0/24" || ipam["dataDir"] != "/var/lib/kubox/cni/networks" {
			t.Errorf("bridge plugin: %v", bridge)
		}
		masq, _ := bridge["ipMasq"].(bool)
		if tc.wantBackend == "none" {
			if masq || len(c.Plugins) != 1 {
				t.Errorf("no tools: want no masquerade and no portmap, got %s", data)
			}
			continue
		}
		// kubox masquerades itself (masq.go): the plugin's ipMasq would
		// NAT traffic to other nodes' pods too.
		if masq || bridge["ipMasqBackend"] != nil {
			t.Errorf("bridge plugin masquerades: %v", bridge)
		}
		if len(c.Plugins) != 2 || c.Plugins[1]["type"] != "portmap" || c.Plugins[1]["backend"] != tc.wantBackend {
			t.Errorf("portmap: %v", c.Plugins)
		}
	}
}
