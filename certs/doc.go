// Package certs holds what ha-injector knows about its serving certificate
// beyond what controller-runtime's certwatcher does (load the mounted files
// and reload them when they change): the cert-manager resources the Helm
// chart relies on, the self-managed mode for clusters without cert-manager
// (cert-controller's rotator keeps a CA and the serving certificate in a
// Secret and writes the CA into the webhook configuration), and, for tests,
// the demo and benchmarks, a small CA and self-signed certificates, written
// so that a watcher never reads a half-written file.
package certs
