package server

import (
	"context"

	"github.com/kubox/kubox/services/manifests"
)

// Manifests reads the state of every file of the manifests dirs, as the
// boxes recorded it in the cluster (`kubox manifests ls`).
func (a *Admin) Manifests(ctx context.Context) ([]manifests.FileState, error) {
	client, err := a.client()
	if err != nil {
		return nil, err
	}
	return manifests.List(ctx, client)
}
