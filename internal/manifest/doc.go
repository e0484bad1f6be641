// Package manifest reads and writes streams of Kubernetes manifests (YAML,
// possibly multi-document, or JSON) disturbing them as little as it can: each
// document is turned into JSON with its keys in the order they were written
// (plain scalars read as kubectl reads them, YAML 1.1), and written back in
// that order. An unchanged document is written back exactly as read. A
// changed one keeps its key order and the comments above it; comments inside
// it are lost, aliases are expanded and scalars are written in one canonical
// style.
package manifest
