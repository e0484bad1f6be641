// Package installation finds, read-only, how ha-injector is installed in a cluster: its
// MutatingWebhookConfiguration, the namespace the chart was installed in, the webhook's
// Deployment and the settings serve runs with (from that Deployment's arguments). Both
// `ha-injector doctor` and `ha-injector preview --cluster` start from it.
package installation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies"
)

// The names the chart gives what it installs.
const (
	// PodsWebhook is the name of the webhook, in the chart's configuration, that
	// mutates Pods; a MutatingWebhookConfiguration with it is ha-injector's.
	PodsWebhook = "pods.ha-injector.io"
	// DeploymentsWebhook mutates the Deployments of namespaces that opt in.
	DeploymentsWebhook = "deployments" + WebhookSuffix
	// LeavingDeploymentsWebhook takes the injection back from the Deployments of
	// namespaces that no longer opt in.
	LeavingDeploymentsWebhook = "leaving-deployments" + WebhookSuffix
	// WebhookSuffix ends the name of every webhook of the chart.
	WebhookSuffix = ".ha-injector.io"
	// ContainerName is serve's container in the chart's Deployment.
	ContainerName = "ha-injector"
	// TLSMountPath is where that container reads its serving certificate.
	TLSMountPath = "/var/run/ha-injector/tls"
	// ComponentLabel marks the webhook's own Deployment and pods.
	ComponentLabel = "ha-injector.io/component"
)

// ErrNotInstalled is wrapped by Find's error when no webhook configuration is found.
var ErrNotInstalled = errors.New("ha-injector is not installed")

// Installation is what Find found.
type Installation struct {
	// Webhooks is ha-injector's MutatingWebhookConfiguration; nil in native mode.
	Webhooks *admissionregistrationv1.MutatingWebhookConfiguration
	// Native is native mode's MutatingAdmissionPolicy (FindAny); nil in webhook mode.
	Native *admissionregistrationv1.MutatingAdmissionPolicy
	// Namespace is the namespace the chart was installed in: the webhook
	// Service's, or the one passed to Find; empty when neither names one (a
	// `url` clientConfig, as in `make demo`).
	Namespace string
	// Service is the webhook's Service, from the pods webhook's clientConfig;
	// nil for a `url` clientConfig.
	Service *types.NamespacedName
	// URL is the pods webhook's `url` clientConfig, if it has one.
	URL string
	// Deployment is the webhook's Deployment (native mode: serve's); nil when none
	// was found.
	Deployment *appsv1.Deployment
	// Settings are serve's, from Deployment's arguments.
	Settings Settings
}

// Settings are the arguments of serve that decide what the webhook injects, and where
// its certificate comes from. The zero value of a field means serve's default.
type Settings struct {
	// SysctlImage is --sysctl-image.
	SysctlImage string
	// AllowedSysctlImages is --allowed-sysctl-images, every occurrence (nil when
	// absent: --sysctl-image alone).
	AllowedSysctlImages []string
	// PodSecurity is --pod-security-default-level and -version ("auto" is kept as
	// it is: the caller resolves it).
	PodSecurity policies.PodSecurityDefault
	// CertMode is --cert-mode ("self-managed", or empty: files).
	CertMode string
	// CertSecret is the Secret mounted at TLSMountPath, or --cert-secret-name.
	CertSecret string
}

// Find finds ha-injector's MutatingWebhookConfiguration (the one with a webhook named
// PodsWebhook; when namespace is given, the one whose Service is in it: several found
// without it are an error) and, when its clientConfig names a Service, the Deployment behind it. It only
// reads. When there is no configuration, the error wraps ErrNotInstalled.
func Find(ctx context.Context, c client.Reader, namespace string) (*Installation, error) {
	var list admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing MutatingWebhookConfigurations: %w", err)
	}
	var found []*admissionregistrationv1.MutatingWebhookConfiguration
	for i := range list.Items {
		mwc := &list.Items[i]
		hook := PodHook(mwc)
		if hook == nil {
			continue
		}
		if namespace != "" && (hook.ClientConfig.Service == nil || hook.ClientConfig.Service.Namespace != namespace) {
			continue
		}
		found = append(found, mwc)
	}
	switch {
	case len(found) == 0:
		where := ""
		if namespace != "" {
			where = " calling a Service in namespace " + namespace
		}
		return nil, fmt.Errorf("%w: no MutatingWebhookConfiguration has a webhook named %s%s", ErrNotInstalled, PodsWebhook, where)
	case len(found) > 1:
		names := make([]string, len(found))
		for i, m := range found {
			names[i] = m.Name
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%d MutatingWebhookConfigurations have a webhook named %s (%s): pass the namespace the chart is installed in", len(found), PodsWebhook, strings.Join(names, ", "))
	}
	in := &Installation{Webhooks: found[0], Namespace: namespace}
	hook := PodHook(in.Webhooks)
	if s := hook.ClientConfig.Service; s != nil {
		in.Service = &types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		in.Namespace = s.Namespace
	}
	if hook.ClientConfig.URL != nil {
		in.URL = *hook.ClientConfig.URL
	}
	if in.Service != nil {
		d, err := findDeployment(ctx, c, *in.Service)
		if err != nil {
			return nil, err
		}
		in.Deployment = d
		if d != nil {
			in.Settings = settingsOf(d)
		}
	}
	return in, nil
}

// PodHook is the webhook named PodsWebhook in mwc, or nil.
func PodHook(mwc *admissionregistrationv1.MutatingWebhookConfiguration) *admissionregistrationv1.MutatingWebhook {
	return Hook(mwc, PodsWebhook)
}

// Hook is the webhook named name in mwc, or nil.
func Hook(mwc *admissionregistrationv1.MutatingWebhookConfiguration, name string) *admissionregistrationv1.MutatingWebhook {
	for i := range mwc.Webhooks {
		if mwc.Webhooks[i].Name == name {
			return &mwc.Webhooks[i]
		}
	}
	return nil
}

// Selects matches a webhook's namespace or object selector as the API server does: nil
// selects everything, and a selector that does not parse selects nothing.
func Selects(sel *metav1.LabelSelector, set map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(set))
}

// findDeployment is the Deployment named as the Service (the chart names both after the
// release), else the one labelled ComponentLabel=webhook in its namespace; nil if none.
func findDeployment(ctx context.Context, c client.Reader, svc types.NamespacedName) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	err := c.Get(ctx, svc, &d)
	if err == nil {
		return &d, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading Deployment %s: %w", svc, err)
	}
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{ComponentLabel: "webhook"}); err != nil {
		return nil, fmt.Errorf("listing Deployments in %s: %w", svc.Namespace, err)
	}
	if len(list.Items) == 0 {
		return nil, nil
	}
	return &list.Items[0], nil
}

// settingsOf reads serve's arguments from the Deployment's ha-injector container (or
// its first container) and the Secret mounted at TLSMountPath.
func settingsOf(d *appsv1.Deployment) Settings {
	spec := d.Spec.Template.Spec
	var ctr *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == ContainerName || ctr == nil {
			ctr = &spec.Containers[i]
		}
	}
	var s Settings
	if ctr == nil {
		return s
	}
	all := append(append([]string{}, ctr.Command...), ctr.Args...)
	args := flagValues(all)
	s.SysctlImage = args["sysctl-image"]
	s.AllowedSysctlImages = flagList(all, "allowed-sysctl-images")
	s.PodSecurity = policies.PodSecurityDefault{Level: args["pod-security-default-level"], Version: args["pod-security-default-version"]}
	s.CertMode = args["cert-mode"]
	s.CertSecret = args["cert-secret-name"]
	for _, m := range ctr.VolumeMounts {
		if m.MountPath != TLSMountPath {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				s.CertSecret = v.Secret.SecretName
			}
		}
	}
	return s
}

// flagList collects every value of a repeatable list flag (--name=a,b --name c), in
// order, as pflag's StringSlice does.
func flagList(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		rest, ok := strings.CutPrefix(args[i], "--"+name)
		switch {
		case !ok:
			continue
		case strings.HasPrefix(rest, "="):
			out = append(out, strings.Split(rest[1:], ",")...)
		case rest == "" && i+1 < len(args):
			out = append(out, strings.Split(args[i+1], ",")...)
			i++
		}
	}
	return out
}

// flagValues maps the long flags in args (--name=value or --name value) to their
// values; the last one wins, as with pflag.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok || name == "" {
			continue
		}
		if k, v, eq := strings.Cut(name, "="); eq {
			out[k] = v
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			out[name] = args[i+1]
			i++
		}
	}
	return out
}

// Facts returns the settings the webhook runs with, as the facts gatherer takes
// them: serve's defaults for what its Deployment does not set (defaultImage
// for --sysctl-image: the image of the binary's version), and a Pod Security
// level of auto resolved as serve resolves it, by asking the cluster cfg
// reaches.
func (s Settings) Facts(cfg *rest.Config, defaultImage string) (facts.Settings, error) {
	out := facts.Settings{SysctlImage: s.SysctlImage, AllowedSysctlImages: s.AllowedSysctlImages, PodSecurity: s.PodSecurity}
	if out.SysctlImage == "" {
		out.SysctlImage = defaultImage
	}
	if out.PodSecurity.Version == "" {
		out.PodSecurity.Version = "latest"
	}
	if out.PodSecurity.Level == "" || out.PodSecurity.Level == PodSecurityAuto {
		level, err := facts.DetectPodSecurityDefault(cfg)
		if err != nil {
			return out, fmt.Errorf("resolving the webhook's --pod-security-default-level=auto: %w", err)
		}
		out.PodSecurity.Level = level
	}
	return out, nil
}

// PodSecurityAuto is serve's --pod-security-default-level that asks it to find
// the cluster's default itself.
const PodSecurityAuto = "auto"
