// Package cases loads the engine's golden cases (policies/testdata): each a
// file whose first YAML document holds the settings (the policy, the
// namespace, what the cluster knows) and whose second is the object to
// mutate. The engine's golden, idempotence and fuzz tests and native mode's
// differential test read the same cases.
package cases

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/golden"
)

// GoldenSuffix ends the name of a case's expected output.
const GoldenSuffix = ".golden.yaml"

// SysctlImage stands for the installation's image (serve --sysctl-image).
const SysctlImage = "registry.example/ha-injector:v1.0.0"

// PolicyName is the name of every case's HAPolicy.
const PolicyName = "test-policy"

// Namespace is the name of every case's namespace.
const Namespace = "team-a"

// Settings is a case's first document.
type Settings struct {
	// Policy is an HAPolicy spec; unset fields take their defaults.
	Policy          v1alpha1.HAPolicySpec `json:"policy"`
	NamespaceLabels map[string]string     `json:"namespaceLabels"`
	TopologyDomains map[string]int        `json:"topologyDomains"`
	// Owner is what the webhook would know of a Pod's ReplicaSet.
	Owner *policies.Owner `json:"owner"`
	// NotOptedIn: the namespace no longer carries the policy label.
	NotOptedIn bool `json:"notOptedIn"`
	// PodSecurityDefault is the cluster's Pod Security default (--pod-security-default-level).
	PodSecurityDefault policies.PodSecurityDefault `json:"podSecurityDefault"`
	// AllowedSysctlImages is serve's --allowed-sysctl-images (unset: the installation's image alone).
	AllowedSysctlImages []string `json:"allowedSysctlImages"`
	// InvalidPolicy says the policy breaks a rule of the CRD schema on purpose,
	// as one stored under an older CRD can.
	InvalidPolicy bool `json:"invalidPolicy"`
}

// Case is a loaded case.
type Case struct {
	// Name is the file's name without .yaml.
	Name     string
	Settings Settings
	// Context is the engine's input: the policy (defaulted) and the settings.
	Context policies.Context
	Object  manifest.Document
}

// Load loads every case of dir (the files ending in .yaml but not GoldenSuffix).
func Load(t testing.TB, dir string) []Case {
	t.Helper()
	var out []Case
	for _, in := range golden.Inputs(t, dir, ".yaml", GoldenSuffix) {
		f, err := os.Open(in)
		require.NoError(t, err)
		docs, err := manifest.Read(in, f)
		f.Close()
		require.NoError(t, err)
		require.Len(t, docs, 2, "%s: want a settings document and an object document", in)

		var s Settings
		require.NoError(t, yaml.UnmarshalStrict(docs[0].JSON, &s), in)
		policy := &v1alpha1.HAPolicy{Spec: s.Policy}
		policy.Name = PolicyName
		policy.Default()
		if s.InvalidPolicy {
			require.NotEmpty(t, policy.Validate(), "%s: the policy must be invalid", in)
		} else {
			require.Empty(t, policy.Validate(), "%s: the policy must be valid", in)
		}
		out = append(out, Case{
			Name:     strings.TrimSuffix(filepath.Base(in), ".yaml"),
			Settings: s,
			Context: policies.Context{
				Policy:              policy,
				Namespace:           policies.Namespace{Name: Namespace, Labels: s.NamespaceLabels},
				Cluster:             policies.Cluster{TopologyDomains: s.TopologyDomains, PodSecurity: s.PodSecurityDefault},
				Owner:               s.Owner,
				SysctlImage:         SysctlImage,
				AllowedSysctlImages: s.AllowedSysctlImages,
				NotOptedIn:          s.NotOptedIn,
			},
			Object: docs[1],
		})
	}
	require.NotEmpty(t, out)
	return out
}
