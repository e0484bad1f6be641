// Package webhook is ha-injector's admission plumbing: a controller-runtime
// manager whose webhook server answers the API server's AdmissionReviews for
// Pods and Deployments. It decodes the request (policies.Decode), has the
// facts gatherer read the namespace, its HAPolicy and the rest through the
// manager's cache (its informers and its ReplicaSets index), calls the
// policies engine, and answers with the patch of the parts the injections own
// (webhook/patch) and the decisions (as warnings). Nothing about what to
// inject is decided here.
//
// It fails open: ha-injector's own trouble (an unknown policy, a missing
// namespace, an object it cannot decode, a panic) admits the object unchanged
// with a warning and a metric, and only a malformed AdmissionReview is
// answered with HTTP 400.
package webhook
