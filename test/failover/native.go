package failover

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
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

// startNative installs native mode for NativePolicy alone (localwebhook.InstallNative:
// serve would bind every HAPolicy, and the webhook's namespaces must not be served
// twice), compiled with the settings of the webhook running beside it so that both
// sides inject the same, and waits (bounded) until the API server applies it to a pod
// in NativeNS.
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
	if _, err := localwebhook.InstallNative(ctx, c, o, NativePolicy); err != nil {
		return err
	}
	return localwebhook.WaitNative(ctx, c, NativeNS, 30*time.Second)
}
