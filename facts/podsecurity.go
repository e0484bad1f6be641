package facts

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/ha-injector/ha-injector/policies"
)

// openShiftSecurityGroup is served by OpenShift, whose SecurityContextConstraints
// reject privileged containers for ordinary service accounts.
const openShiftSecurityGroup = "security.openshift.io"

// DetectPodSecurityDefault resolves --pod-security-default-level=auto (serve, and
// preview --cluster from the Deployment's arguments). The API
// server's AdmissionConfiguration cannot be read through the API, so auto can
// only recognise what the API shows: OpenShift (restricted); anywhere else it
// is Kubernetes' own default, privileged. Clusters that set a default in their
// AdmissionConfiguration (Talos: baseline; hardened RKE2: restricted) must pass
// the level explicitly.
func DetectPodSecurityDefault(cfg *rest.Config) (string, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", err
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		return "", fmt.Errorf("listing the API groups: %w", err)
	}
	return podSecurityLevelFor(groups.Groups), nil
}

func podSecurityLevelFor(groups []metav1.APIGroup) string {
	for _, g := range groups {
		if g.Name == openShiftSecurityGroup {
			return policies.PodSecurityRestricted
		}
	}
	return policies.PodSecurityPrivileged
}
