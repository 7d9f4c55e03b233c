package netpol

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/knftables"
)

type list[T any] struct{ items []T }

func (l *list[T]) List(labels.Selector) ([]T, error) { return l.items, nil }

// A sync writes the compiled rules; one after a change replaces them whole
// (old policy objects gone); one with nothing changed runs no transaction.
func TestSyncReplaces(t *testing.T) {
	in := cluster(policy("a", "p1", sel("app", "web"), nil), policy("a", "p2", sel("app", "client"), nil))
	fake := knftables.NewFake(knftables.IPv4Family, Table)
	pods := &list[*corev1.Pod]{in.Pods}
	pols := &list[*networkingv1.NetworkPolicy]{in.Policies}
	s := &syncer{nft: fake, node: here, pods: pods, nss: &list[*corev1.Namespace]{in.Namespaces}, pols: pols,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	if err := s.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	for _, want := range []string{"add chain ip kubox np-p1-in", webIP + " : goto np-g0-in", clientIP + " : goto np-g1-in"} {
		if !strings.Contains(dump, want) {
			t.Errorf("first sync lacks %q:\n%s", want, dump)
		}
	}
	pols.items = pols.items[:1]
	if err := s.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	dump = fake.Dump()
	if strings.Contains(dump, "np-p1-in") || strings.Contains(dump, clientIP+" : ") || !strings.Contains(dump, webIP+" : goto np-g0-in") {
		t.Errorf("after deleting p2:\n%s", dump)
	}
	fake.LastTransaction = nil
	if err := s.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	if fake.LastTransaction != nil {
		t.Errorf("a sync with nothing changed wrote:\n%s", fake.LastTransaction)
	}
	if err := s.sync(ctx, true); err != nil || fake.LastTransaction == nil {
		t.Errorf("a forced sync wrote nothing: %v", err)
	}
}
