// Package manifest reads and writes streams of Kubernetes manifests (YAML,
// possibly multi-document, or JSON) without disturbing them: each document is
// turned into JSON with its keys in the order they were written, and written
// back in that order, so that a tool which changes a few fields of a document
// prints a document that differs from its input only by those fields.
package manifest
