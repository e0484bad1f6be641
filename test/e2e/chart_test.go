package e2e

import (
	"github.com/ha-injector/ha-injector/internal/chartrender"
	"github.com/ha-injector/ha-injector/internal/testenv"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// chartValues are the values the suite installs the chart with: the user's-own-CA mode
// (the test's CA), and an Audit policy next to the default one.
var chartValues = map[string]any{
	"certManager": map[string]any{"enabled": false},
	"certs":       map[string]any{"mode": "provided", "provided": map[string]any{"secretName": "unused-in-e2e", "caBundle": "dW51c2Vk"}},
	"policies":    map[string]any{"audit": map[string]any{"mode": "Audit"}},
}

// chartObjects renders the chart (the CRD comes from the same crds/ folder through
// testenv) and returns what the API server needs from it: the webhook configuration,
// pointed at base and trusting caBundle, and the HAPolicies.
func chartObjects(base string, caBundle []byte) ([]client.Object, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	c, err := chartrender.Load(root)
	if err != nil {
		return nil, err
	}
	r, err := chartrender.Render(c, chartValues, chartrender.Options{})
	if err != nil {
		return nil, err
	}
	hooks, err := r.LocalWebhookConfiguration(base, caBundle)
	if err != nil {
		return nil, err
	}
	objs := []client.Object{hooks}
	for _, p := range r.Find("HAPolicy") {
		objs = append(objs, p)
	}
	return objs, nil
}
