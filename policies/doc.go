// Package policies is ha-injector's pure core: it applies an HAPolicy to the
// pod template of a Pod or a Deployment and says what it did.
//
// Each thing it injects is one Injection (anti-affinity, tolerations,
// sysctls, each in a file of its own), registered in one ordered list: the
// engine applies them in that order, undoes each one's part of the record,
// and copies and compares only the parts of a pod spec they declare; the
// webhook's patch projects those parts only, and the facts gatherer reads
// what they say they need (NeedsOf). A new injection is a file, its field in
// the HAPolicy API, and a line in that list.
//
// Decode (or ObjectOf) turns an admitted object or a manifest document into an
// Object: the one place that tells a Pod from a Deployment and says where its
// pod template lives. Mutate (MutateObject) returns the object as it should be
// stored, with the decisions; MutateTemplate does it for a pod template.
//
// Nothing here does I/O: no HTTP, no client, no files.
package policies
