package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// The admission modes: the API server calls serve (webhook), or applies the
// policies itself through a MutatingAdmissionPolicy (native), serve keeping
// only their bindings and the facts they read.
const (
	AdmissionModeWebhook = "webhook"
	AdmissionModeNative  = "native"
)

// runNative is serve in native mode: no webhook server and no serving
// certificate, only native.Controller, with the probes and the metrics.
func runNative(ctx context.Context, cfg Config) error {
	timeout := cfg.GracefulShutdownTimeout
	bindings := map[client.Object]cache.ByObject{}
	for _, obj := range []client.Object{&admissionregistrationv1.MutatingAdmissionPolicyBinding{}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}} {
		bindings[obj] = cache.ByObject{Label: native.ManagedBySelector()}
	}
	bindings[native.NodeMetadata()] = cache.ByObject{Transform: keepLabels()}
	mgr, err := ctrl.NewManager(cfg.RestConfig, ctrl.Options{
		Scheme:                  Scheme,
		HealthProbeBindAddress:  cfg.HealthProbeBindAddress,
		Metrics:                 metricsOptions(cfg),
		PprofBindAddress:        cfg.PprofBindAddress,
		GracefulShutdownTimeout: &timeout,
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: bindings},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	c := &native.Controller{Client: mgr.GetClient(), Options: native.Options{Name: cfg.NativePolicyName}}
	if err := c.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("caches", func(*http.Request) error {
		cctx, cancel := context.WithTimeout(context.Background(), cacheSyncCheckTimeout)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(cctx) {
			return errors.New("caches have not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	// The policies the bindings name must be there: the chart installs them.
	var m admissionregistrationv1.MutatingAdmissionPolicy
	if err := mgr.GetAPIReader().Get(ctx, client.ObjectKey{Name: cfg.NativePolicyName}, &m); err != nil {
		return fmt.Errorf("--native-policy-name: MutatingAdmissionPolicy %s: %w", cfg.NativePolicyName, err)
	}
	if m.Spec.ParamKind == nil || m.Spec.ParamKind.Kind != "HAPolicy" || m.Spec.ParamKind.APIVersion != v1alpha1.GroupVersion.String() {
		return fmt.Errorf("--native-policy-name: MutatingAdmissionPolicy %s does not take HAPolicies as its parameters: not ha-injector's", cfg.NativePolicyName)
	}
	return mgr.Start(ctx)
}
