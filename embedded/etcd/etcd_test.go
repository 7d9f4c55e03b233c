package etcd

import (
	"slices"
	"testing"
)

func TestOtherPeers(t *testing.T) {
	e := New(Config{Name: "box3", InitialCluster: "box1=https://10.0.0.1:2380,box2=https://10.0.0.2:2380,box3=https://10.0.0.3:2380"})
	if got, want := e.otherPeers(), []string{"https://10.0.0.1:2380", "https://10.0.0.2:2380"}; !slices.Equal(got, want) {
		t.Errorf("otherPeers = %v, want %v", got, want)
	}
	if got := New(Config{Name: "box1"}).otherPeers(); len(got) != 0 {
		t.Errorf("otherPeers of a new cluster = %v", got)
	}
}
