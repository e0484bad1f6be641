package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Outcome is how one admission ended, as counted by the admissions metric.
type Outcome string

// The outcomes.
const (
	// OutcomeMutated: the object was patched.
	OutcomeMutated Outcome = "mutated"
	// OutcomeUnchanged: the policy applied but there was nothing to change.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeSkipped: the namespace did not opt in, or the workload is exempt
	// (opted out, DaemonSet pod, mirror pod).
	OutcomeSkipped Outcome = "skipped"
	// OutcomeAudit: the policy is in Audit mode; warnings say what would change.
	OutcomeAudit Outcome = "audit"
	// OutcomeError: ha-injector could not do its job and admitted the object
	// unchanged (fail open).
	OutcomeError Outcome = "error"
)

// Metrics are registered with controller-runtime's registry, so they are
// served next to its webhook latency histogram
// (controller_runtime_webhook_latency_seconds) and request counters.
var (
	admissionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ha_injector_admissions_total",
		Help: "Admission requests handled, by kind, HAPolicy and outcome (mutated, unchanged, skipped, audit, error).",
	}, []string{"kind", "policy", "outcome"})

	injectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ha_injector_injections_total",
		Help: "Features injected into admitted objects, by kind and feature (antiAffinity, tolerations, sysctls).",
	}, []string{"kind", "feature"})

	fallbacksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ha_injector_fallbacks_total",
		Help: "Times the policy could not be applied as written, by kind and reason (pod-security: sysctls moved or dropped, or a template's privileged init container removed; downgrade: Required anti-affinity made Preferred; invalid-policy: the HAPolicy breaks a rule of the CRD, nothing applied; image-not-allowed: no init container from an image the installation does not allow; not-namespaced: a sysctl that would change the node not set).",
	}, []string{"kind", "reason"})

	concurrentRequestsShedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ha_injector_concurrent_requests_shed_total",
		Help: "Requests admitted unchanged, without the injection, because every admission slot (--max-concurrent-admissions) stayed taken for half the API server's timeout, by kind.",
	}, []string{"kind"})

	largeRequestsShedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ha_injector_large_requests_shed_total",
		Help: "Requests over 1 MiB admitted unchanged, without the injection, because the large-request budget (--large-request-budget) had no room for them in time, by kind.",
	}, []string{"kind"})
)

// ownMetrics are the metrics above, in the order docs/reference/metrics.md lists them.
var ownMetrics = []prometheus.Collector{admissionsTotal, injectionsTotal, fallbacksTotal, largeRequestsShedTotal, concurrentRequestsShedTotal}

func init() {
	metrics.Registry.MustRegister(ownMetrics...)
}
