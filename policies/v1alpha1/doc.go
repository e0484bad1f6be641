// Package v1alpha1 holds the HAPolicy API (group ha-injector.io, version
// v1alpha1): the Go types with the kubebuilder markers the CRD is generated
// from, and Go functions that default and validate a policy by the same rules
// the API server applies through the CRD schema, for tools that have no API
// server at hand (ha-injector preview).
//
// +kubebuilder:object:generate=true
// +groupName=ha-injector.io
package v1alpha1
