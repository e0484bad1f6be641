package failover

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook"
)

// NativePolicy is the HAPolicy native mode applies in NativeNS: the default policy's
// spec under a name of its own, so that its bindings select NativeNS only.
const NativePolicy = "native"

// The sides of the node loss: how ha-injector reached a namespace's pods.
const (
	SideWebhook = "webhook"
	SideNative  = "native"
	SideNone    = "none"
)

// nativeName is the name of native mode's admission policies, as the chart names them.
const nativeName = "ha-injector"

// startNative installs native mode as the chart and serve in native mode install it:
// the chart's two admission policies, compiled with the settings of the webhook running
// beside it (so both sides inject the same), then what serve writes for NativePolicy, by
// its own controller's code: the two bindings and the topology domains in the policy's
// status. Only NativePolicy is bound: serve would bind every HAPolicy, and the
// webhook's namespaces must not be served twice. It waits (bounded) until the API server
// applies it to a pod in NativeNS.
func (r *run) startNative(ctx context.Context, serve webhook.Config) error {
	c, err := client.New(r.cl.Config, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return err
	}
	level := serve.PodSecurityDefaultLevel
	if level == webhook.PodSecurityAuto {
		if level, err = facts.DetectPodSecurityDefault(r.cl.Config); err != nil {
			return err
		}
	}
	o := native.Options{Name: nativeName, Settings: policies.NativeSettings{
		SysctlImage: serve.SysctlImage, AllowedSysctlImages: serve.AllowedSysctlImages,
		PodSecurity: policies.PodSecurityDefault{Level: level, Version: serve.PodSecurityDefaultVersion},
	}}
	for _, obj := range []client.Object{native.MutatingPolicy(o), native.ValidatingPolicy(o)} {
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("native mode's %T: %w", obj, err)
		}
	}
	ctrl := &native.Controller{Client: c, Options: o}
	if _, err := ctrl.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: NativePolicy}}); err != nil {
		return fmt.Errorf("binding HAPolicy %s as serve does in native mode: %w", NativePolicy, err)
	}
	return poll(ctx, 30*time.Second, "native mode to apply to pods in "+NativeNS, func() (bool, error) {
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: NativeNS, GenerateName: "probe-"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			return false, err
		}
		rec := policies.ReadRecord(probe.Annotations)
		return rec != nil && rec.Native, nil
	})
}
