package chunkserver

import "github.com/dockyard/dockyard/internal/clusterauth"

// NewClusterClient is NewClient(nil) whose requests carry the cluster secret,
// which chunkservers started with one require. A nil secret sends them
// unsigned.
func NewClusterClient(s *clusterauth.Secret) *Client {
	return NewClient(s.Client(defaultHTTPClient()))
}
