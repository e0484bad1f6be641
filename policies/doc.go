// Package policies is ha-injector's pure core: it applies an HAPolicy to the
// pod template of a Pod or a Deployment and says what it did.
//
// MutateTemplate turns (policy, namespace facts, cluster facts, workload, pod
// template) into a new pod template and a list of decisions; Mutate does the
// same for a whole Pod or Deployment and also returns the JSON patch between
// the two typed objects. The webhook sends exactly that patch and
// `ha-injector preview` applies exactly that patch to the documents it reads,
// so what preview prints is what the webhook would do.
//
// Nothing here does I/O: no HTTP, no client, no files.
package policies
