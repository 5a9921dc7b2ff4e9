package metaserver

import "github.com/dockyard/dockyard/internal/clusterauth"

// WithClusterSecret signs every request with the cluster secret, which
// metaservers started with one require. A nil secret sends requests unsigned.
func WithClusterSecret(s *clusterauth.Secret) ClientOption {
	return func(h *httpExecutor) { h.secret = s }
}
