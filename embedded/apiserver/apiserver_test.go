package apiserver

import (
	"net"
	"slices"
	"strings"
	"testing"

	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/kubox/kubox/embedded/flags"
)

// argValues returns the values given to --name, in order.
func argValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// The service-account issuer follows the cluster domain; on another domain
// than cluster.local, tokens issued as cluster.local (as kubox did before)
// are still accepted, and new ones are issued for the domain.
func TestServiceAccountIssuerFollowsDomain(t *testing.T) {
	for _, tc := range []struct {
		domain             string
		issuers, audiences []string
	}{
		{"cluster.local", []string{"https://kubernetes.default.svc.cluster.local"}, []string{"https://kubernetes.default.svc.cluster.local"}},
		{"edge.example", []string{"https://kubernetes.default.svc.edge.example", "https://kubernetes.default.svc.cluster.local"},
			[]string{"https://kubernetes.default.svc.edge.example,https://kubernetes.default.svc.cluster.local"}},
	} {
		args := New(Config{NodeIP: net.ParseIP("192.0.2.10"), ClusterDomain: tc.domain}).Args()
		if got := argValues(args, "service-account-issuer"); !slices.Equal(got, tc.issuers) {
			t.Errorf("%s: issuers %v, want %v", tc.domain, got, tc.issuers)
		}
		if got := argValues(args, "api-audiences"); !slices.Equal(got, tc.audiences) {
			t.Errorf("%s: audiences %v, want %v", tc.domain, got, tc.audiences)
		}
		// Upstream's flags take them so: the first issuer signs.
		s := options.NewServerRunOptions()
		if err := flags.Parse("kube-apiserver", s.Flags(), args); err != nil {
			t.Fatal(err)
		}
		if got := s.Authentication.ServiceAccounts.Issuers; !slices.Equal(got, tc.issuers) {
			t.Errorf("%s: parsed issuers %v, want %v", tc.domain, got, tc.issuers)
		}
	}
}
