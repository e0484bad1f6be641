package chartrender

import (
	"fmt"
	"net/url"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// LocalWebhookConfiguration returns the chart's MutatingWebhookConfiguration with every
// webhook's Service reference replaced by a URL on base (e.g. https://127.0.0.1:9443),
// same path, trusting caBundle: how envtest points a cluster's webhooks at a server
// running outside it. Everything else (selectors, policies, timeouts) is the chart's.
func (r *Result) LocalWebhookConfiguration(base string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	hooks := r.Find("MutatingWebhookConfiguration")
	if len(hooks) != 1 {
		return nil, fmt.Errorf("the render has %d MutatingWebhookConfigurations, want 1", len(hooks))
	}
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(hooks[0].Object, cfg, true); err != nil {
		return nil, fmt.Errorf("MutatingWebhookConfiguration %s: %w", hooks[0].GetName(), err)
	}
	for i := range cfg.Webhooks {
		cc := &cfg.Webhooks[i].ClientConfig
		if cc.Service == nil {
			return nil, fmt.Errorf("webhook %s has no Service reference", cfg.Webhooks[i].Name)
		}
		path := ""
		if cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		u, err := url.JoinPath(base, path)
		if err != nil {
			return nil, err
		}
		cc.Service, cc.URL, cc.CABundle = nil, &u, caBundle
	}
	return cfg, nil
}
