// Package webui is the registry's browser front-end: server-rendered pages
// listing repositories, tags and images, and the storage cluster's health.
//
// It reads repositories, tags, manifests, config blobs and referrers only
// through the registry's public HTTP API (an in-process http.Handler), never
// through the registry's records, so the pages show exactly what a client of
// the protocol would see and the UI keeps working when the registry's
// internals change. Cluster figures come from the metaserver's Status call;
// volumes are read through the volume package over the file system client,
// metadata only, and shown to admins only when the registry has users.
//
// The pages are html/template with embedded CSS and one small script for
// copy buttons: nothing is fetched from outside, there is no build step, and
// every value (repository names, tags, labels are user input) is escaped by
// the template engine. The UI must never claim a /v2/ route or /metrics.
package webui
