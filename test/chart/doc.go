// Package chart tests the Helm chart in charts/ha-injector with the Helm Go SDK (no helm
// binary): lint, renders with every documented switch checked object by object, the
// values schema, the README's values table, a golden file of the default render, and the
// rendered objects applied (server-side dry run) to a real kube-apiserver.
package chart
