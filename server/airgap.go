package server

import (
	"github.com/kubox/kubox/airgap"
	"github.com/kubox/kubox/embedded/component"
)

// airgapComponent imports the image bundles of the images dir at start
// (before the kubelet, so pods find their images) and while running.
func (s *Server) airgapComponent() (component.Component, error) {
	c := s.cfg
	policy := airgap.SignaturePolicy{Require: c.AirgapRequireSignature}
	if c.AirgapPublicKeyFile != "" {
		k, err := airgap.LoadPublicKey(c.AirgapPublicKeyFile)
		if err != nil {
			return nil, err
		}
		policy.PublicKey = k
	}
	return airgap.NewWatcher(airgap.WatcherConfig{
		Dir:       c.AirgapImagesDir,
		Record:    airgap.Record{Path: airgap.DefaultRecordPath(c.DataDir)},
		Address:   s.paths.ContainerdSock,
		Signature: policy,
		Log:       s.log.With("component", "airgap"),
	}), nil
}
