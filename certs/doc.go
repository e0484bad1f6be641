// Package certs holds what ha-injector knows about its serving certificate
// beyond what controller-runtime's certwatcher does (load the mounted files
// and reload them when they change): generating a self-signed certificate
// for tests and for clusters without cert-manager, and writing it so that a
// watcher never reads a half-written file.
package certs
