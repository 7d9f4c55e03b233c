package bootstrap

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kubox/kubox/internal/fsutil"
)

// retireKubeletServing moves aside the kubelet serving cert and key that
// earlier kubox versions issued: the kubelet now gets its serving cert
// through a CertificateSigningRequest, and a leaf nobody renews would
// only show up as expiring in `kubox certs check` a year later.
func (p *PKI) retireKubeletServing(ctx context.Context, now time.Time) error {
	for _, name := range []string{"kubelet-serving.crt", "kubelet-serving.key"} {
		path := filepath.Join(p.Dir, name)
		if _, err := os.Lstat(path); err != nil {
			continue
		}
		old, err := fsutil.MoveAside(path, now)
		if err != nil {
			return err
		}
		slog.InfoContext(ctx, "bootstrap: moved aside the kubelet serving cert kubox no longer issues (the kubelet requests its own)", "old", old)
	}
	return nil
}
