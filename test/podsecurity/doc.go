// Package podsecurity tests ha-injector against a cluster whose Pod Security default is
// not privileged: a real kube-apiserver (envtest) started with an AdmissionConfiguration
// whose PodSecurity plugin enforces "baseline" (latest) wherever a namespace has no
// pod-security.kubernetes.io/enforce label, and a real kube-controller-manager, so that
// Deployments are turned into ReplicaSets and ReplicaSets into pods as on any cluster.
//
// Such a cluster admits a Deployment whatever its template holds (Pod Security enforces
// on pods only) and rejects its pods later, when the ReplicaSet controller creates them:
// the failure shows only as the Deployment's ReplicaFailure condition and FailedCreate
// events. No scheduler and no nodes run: pods stay Pending, which is enough, since Pod
// Security judges a pod when it is created.
//
// The webhook (`serve`) cannot read the API server's AdmissionConfiguration; it learns
// the default from --pod-security-default-level. The tests run serve with the level left
// at "privileged" (the ha-sysctl init container is injected and every pod is rejected)
// and with "baseline", the matching setting (the safe sysctls go to the pod's
// securityContext and every replica is created).
package podsecurity
