// Package facts gathers what the engine needs besides the object it mutates:
// the namespace's labels and the HAPolicy they name, what the cluster knows
// of a Pod's controller, a Deployment UPDATE's stored template and the
// revisions it could be rolling back to, the number of topology domains the
// registered injections ask for (policies.NeedsOf), and the installation's
// settings. It is the one place that builds a policies.Context, over
// read-only sources: the webhook passes its cache (Reader over its informers
// and ReplicaSet index), preview --cluster and doctor a live client (Reader),
// offline preview its flags (Static).
package facts
