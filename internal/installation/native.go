package installation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FindNative returns ha-injector's MutatingAdmissionPolicy, native mode's (the one
// whose parameters are HAPolicies): nil when the cluster runs none, or does not serve
// the API; an error when several do.
func FindNative(ctx context.Context, c client.Reader) (*admissionregistrationv1.MutatingAdmissionPolicy, error) {
	var list admissionregistrationv1.MutatingAdmissionPolicyList
	if err := c.List(ctx, &list); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) || strings.Contains(err.Error(), "the server could not find the requested resource") {
			return nil, nil
		}
		return nil, fmt.Errorf("listing MutatingAdmissionPolicies: %w", err)
	}
	var found []*admissionregistrationv1.MutatingAdmissionPolicy
	var names []string
	for i := range list.Items {
		pk := list.Items[i].Spec.ParamKind
		if pk != nil && pk.Kind == "HAPolicy" && pk.APIVersion == v1alpha1.GroupVersion.String() {
			found, names = append(found, &list.Items[i]), append(names, list.Items[i].Name)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d MutatingAdmissionPolicies take HAPolicies as parameters (%s): ha-injector is installed more than once in native mode; keep one installation", len(found), strings.Join(names, ", "))
}

// FindAny finds ha-injector in either admission mode: its webhook configuration (Find),
// else native mode's MutatingAdmissionPolicy, whose settings are those compiled into it
// (native.SettingsAnnotation) and whose Deployment is serve's controller. When neither
// is found, the error wraps ErrNotInstalled.
func FindAny(ctx context.Context, c client.Reader, namespace string) (*Installation, error) {
	in, err := Find(ctx, c, namespace)
	if !errors.Is(err, ErrNotInstalled) {
		return in, err
	}
	m, nerr := FindNative(ctx, c)
	if nerr != nil {
		return nil, nerr
	}
	if m == nil {
		return nil, fmt.Errorf("%w, and no MutatingAdmissionPolicy takes HAPolicies as parameters (native mode)", err)
	}
	d, err := NativeDeployment(ctx, c, m.Name)
	if err != nil {
		return nil, err
	}
	if namespace != "" && (d == nil || d.Namespace != namespace) {
		return nil, fmt.Errorf("%w: no MutatingWebhookConfiguration has a webhook named %s calling a Service in namespace %s, nor does serve run there in native mode", ErrNotInstalled, PodsWebhook, namespace)
	}
	in = &Installation{Native: m, Namespace: namespace}
	if s, ok := native.SettingsOf(m); ok {
		in.Settings = Settings{SysctlImage: s.SysctlImage, AllowedSysctlImages: s.AllowedSysctlImages, PodSecurity: s.PodSecurity}
	}
	if d != nil {
		in.Deployment, in.Namespace = d, d.Namespace
	}
	return in, nil
}

// NativeDeployment is serve's Deployment in native mode: one labelled
// app.kubernetes.io/name=ha-injector whose container runs serve
// --admission-mode=native --native-policy-name=policy; nil if none.
func NativeDeployment(ctx context.Context, c client.Reader, policy string) (*appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.MatchingLabels{"app.kubernetes.io/name": "ha-injector"}); err != nil {
		return nil, fmt.Errorf("listing Deployments: %w", err)
	}
	for i := range list.Items {
		for _, ctr := range list.Items[i].Spec.Template.Spec.Containers {
			args := flagValues(append(slices.Clone(ctr.Command), ctr.Args...))
			if args["admission-mode"] == "native" && args["native-policy-name"] == policy {
				return &list.Items[i], nil
			}
		}
	}
	return nil, nil
}
