// Package e2e tests ha-injector end to end against a real kube-apiserver and
// etcd: the CRD, the HAPolicies and the MutatingWebhookConfiguration the Helm chart
// renders are installed for real (the webhooks pointed at 127.0.0.1, as envtest does),
// `serve` runs on 127.0.0.1, and objects are created through the API server
// and read back, so the API server's own admission chain (DefaultTolerationSeconds
// before the webhook, Pod Security after it, validation of the patched object)
// is part of every test.
package e2e
