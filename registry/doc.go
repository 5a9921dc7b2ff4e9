// Package registry is Dockyard's container image registry front-end: the OCI
// distribution spec v1.1 (which Docker's Registry V2 clients speak) served by
// Echo over two small storage interfaces, BlobStore for content-addressed bytes
// and the metaserver's transactional KV for records (repositories, manifests,
// tags, referrers, blob links and upload state).
//
// Blobs are stored once per digest across all repositories; a repository sees
// a blob only through a link record, so deleting a blob from one repository
// never affects another. Uploads stream into the blob store while hashing; the
// hash state is saved after every request so a chunked upload resumes on any
// registry instance after a restart; a blob becomes visible only once its
// digest has been verified.
//
// Beside /v2/ it answers Docker V1 search (/v1/search, /v1/_ping) over the
// catalog, and appc discovery (?ac-discovery=1) with ACIs built on request
// from the stored images by the converter (/appc/); see
// docs/registry-protocols.md.
//
// Access control is optional (Config.Auth): users with bcrypt passwords and
// grants in the metaserver KV, HTTP Basic or docker's bearer tokens (EdDSA
// JWTs from /token, signed with one key per cluster kept in the KV); see
// docs/auth.md. Without it the registry is open to whoever reaches it.
//
// The package must never exit the process and never import the metaserver's
// or chunkserver's server code.
package registry
