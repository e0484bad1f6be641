package chart

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/golden"
	"github.com/ha-injector/ha-injector/webhook"
)

const (
	release   = "ha-injector"
	namespace = "ha-injector"
	// caBundle is any base64 text; the chart copies it, the API server decodes it.
	caBundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
)

// parseValues reads values written as YAML, the way users write them.
func parseValues(t testing.TB, s string) map[string]any {
	t.Helper()
	v := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(s), &v))
	return v
}

func render(t testing.TB, values string) (*chartrender.Result, error) {
	t.Helper()
	c, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	return chartrender.Render(c, parseValues(t, values), chartrender.Options{ReleaseName: release, Namespace: namespace})
}

// typed converts a rendered object into its Go type, failing on fields the type lacks.
func typed[T any, P interface {
	*T
	runtime.Object
}](t testing.TB, u *unstructured.Unstructured) P {
	t.Helper()
	require.NotNil(t, u, "object not rendered")
	var obj P = new(T)
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true), "%s %s", u.GetKind(), u.GetName())
	return obj
}

// installation is a render decoded into the objects the assertions look at.
type installation struct {
	r          *chartrender.Result
	deployment *appsv1.Deployment
	service    *corev1.Service
	webhooks   *admissionregistrationv1.MutatingWebhookConfiguration
	container  corev1.Container
	flags      map[string][]string
}

func decode(t testing.TB, r *chartrender.Result) installation {
	t.Helper()
	in := installation{r: r, flags: map[string][]string{}}
	in.deployment = typed[appsv1.Deployment](t, r.Get("Deployment", release))
	in.service = typed[corev1.Service](t, r.Get("Service", release))
	in.webhooks = typed[admissionregistrationv1.MutatingWebhookConfiguration](t, r.Get("MutatingWebhookConfiguration", release))
	require.Len(t, in.deployment.Spec.Template.Spec.Containers, 1)
	in.container = in.deployment.Spec.Template.Spec.Containers[0]
	require.Equal(t, "serve", in.container.Args[0])
	for _, a := range in.container.Args[1:] {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		require.True(t, ok && strings.HasPrefix(a, "--"), "argument %q is not --flag=value", a)
		in.flags[k] = append(in.flags[k], v)
	}
	return in
}

func (in installation) flag(name string) string {
	if v := in.flags[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func (in installation) containerPort(name string) int32 {
	for _, p := range in.container.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// checkInvariants holds for every render, whatever the values: the contract between
// the webhook configuration, the Service, the Deployment and the binary's flags.
func checkInvariants(t *testing.T, in installation) {
	t.Helper()
	podLabels := labels.Set(in.deployment.Spec.Template.Labels)

	t.Run("webhook configuration", func(t *testing.T) {
		hooks := in.webhooks.Webhooks
		require.Len(t, hooks, 3)
		byName := map[string]admissionregistrationv1.MutatingWebhook{}
		for _, h := range hooks {
			byName[h.Name] = h
		}
		pods, deployments, leaving := byName["pods.ha-injector.io"], byName["deployments.ha-injector.io"], byName["leaving-deployments.ha-injector.io"]
		require.NotNil(t, pods.ClientConfig.Service)
		require.NotNil(t, deployments.ClientConfig.Service)
		require.NotNil(t, leaving.ClientConfig.Service)
		assert.Equal(t, webhook.PodPath, *pods.ClientConfig.Service.Path, "the chart calls the path the server serves")
		assert.Equal(t, webhook.DeploymentPath, *deployments.ClientConfig.Service.Path)
		assert.Equal(t, webhook.DeploymentPath, *leaving.ClientConfig.Service.Path)
		assert.Equal(t, deployments.Rules, leaving.Rules)
		assert.Equal(t, []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: ptr(admissionregistrationv1.NamespacedScope)},
		}}, pods.Rules)
		assert.Equal(t, []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"deployments"}, Scope: ptr(admissionregistrationv1.NamespacedScope)},
		}}, deployments.Rules)
		for _, h := range hooks {
			assert.Equal(t, []string{"v1"}, h.AdmissionReviewVersions, h.Name)
			assert.Equal(t, admissionregistrationv1.SideEffectClassNone, *h.SideEffects, h.Name)
			assert.Equal(t, admissionregistrationv1.Equivalent, *h.MatchPolicy, h.Name)
			assert.Equal(t, admissionregistrationv1.IfNeededReinvocationPolicy, *h.ReinvocationPolicy, h.Name)
			svc := h.ClientConfig.Service
			assert.Equal(t, in.service.Name, svc.Name, "%s calls the chart's Service", h.Name)
			assert.Equal(t, namespace, svc.Namespace, h.Name)
			https := servicePort(t, in.service, "https")
			assert.Equal(t, https.Port, *svc.Port, "%s calls the Service's https port", h.Name)

			nsSel, err := metav1.LabelSelectorAsSelector(h.NamespaceSelector)
			require.NoError(t, err)
			ns := func(name string, optedIn bool) labels.Set {
				l := labels.Set{corev1.LabelMetadataName: name}
				if optedIn {
					l["ha-injector.io/policy"] = "default"
				}
				return l
			}
			optedIn := h.Name != leaving.Name
			assert.Equal(t, optedIn, nsSel.Matches(ns("team-a", true)), "%s: an opted-in namespace", h.Name)
			assert.Equal(t, !optedIn, nsSel.Matches(ns("team-a", false)), "%s: a namespace without the label", h.Name)
			for _, system := range []string{"kube-system", "kube-node-lease", "kube-public"} {
				assert.False(t, nsSel.Matches(ns(system, optedIn)), "%s: %s is always exempt", h.Name, system)
			}
			assert.False(t, nsSel.Matches(ns(namespace, optedIn)), "%s: the release namespace is always exempt (the webhook's own pods)", h.Name)
			assert.True(t, nsSel.Matches(ns(namespace+"-other", optedIn)), "%s: only the release namespace itself", h.Name)

			// No label a user can set on a workload exempts it: in opted-in namespaces every
			// object is sent, the webhook's own label included.
			if optedIn {
				assert.Nil(t, h.ObjectSelector, "%s has no objectSelector", h.Name)
				continue
			}
			objSel, err := metav1.LabelSelectorAsSelector(h.ObjectSelector)
			require.NoError(t, err)
			assert.True(t, objSel.Matches(labels.Set{"app": "web-server", "ha-injector.io/injected": "true"}), "%s matches an injected workload", h.Name)
			assert.True(t, objSel.Matches(labels.Set{"ha-injector.io/injected": "true", "ha-injector.io/component": "webhook"}), "%s: the webhook's label exempts nothing", h.Name)
			assert.False(t, objSel.Matches(labels.Set{"app": "web-server"}), "%s: a workload ha-injector did not inject is not sent", h.Name)
		}
	})

	t.Run("service and deployment agree", func(t *testing.T) {
		sel := labels.SelectorFromSet(in.service.Spec.Selector)
		assert.True(t, sel.Matches(podLabels), "the Service selects the webhook pods")
		https := servicePort(t, in.service, "https")
		assert.Equal(t, intstr.FromString("https"), https.TargetPort)
		assert.Equal(t, fmt.Sprint(in.containerPort("https")), in.flag("webhook-port"), "the container port is the port serve listens on")
		metrics := servicePort(t, in.service, "metrics")
		assert.Equal(t, intstr.FromString("metrics"), metrics.TargetPort)
		assert.Equal(t, fmt.Sprintf(":%d", in.containerPort("metrics")), in.flag("metrics-bind-address"))
		assert.Equal(t, fmt.Sprintf(":%d", in.containerPort("healthz")), in.flag("health-probe-bind-address"))
		require.NotNil(t, in.container.LivenessProbe)
		require.NotNil(t, in.container.ReadinessProbe)
		assert.Equal(t, "/healthz", in.container.LivenessProbe.HTTPGet.Path)
		assert.Equal(t, "/readyz", in.container.ReadinessProbe.HTTPGet.Path)
		assert.Equal(t, intstr.FromString("healthz"), in.container.ReadinessProbe.HTTPGet.Port)

		// The certificate folder serve reads is the mounted Secret.
		var mount *corev1.VolumeMount
		for i, m := range in.container.VolumeMounts {
			if m.MountPath == in.flag("webhook-cert-path") {
				mount = &in.container.VolumeMounts[i]
			}
		}
		require.NotNil(t, mount, "--webhook-cert-path %q is a volume mount", in.flag("webhook-cert-path"))
		assert.True(t, mount.ReadOnly)
		assert.Equal(t, "tls.crt", in.flag("webhook-cert-name"))
		assert.Equal(t, "tls.key", in.flag("webhook-cert-key"))
		assert.NotEmpty(t, tlsSecretName(t, in), "the mount is a Secret")
	})

	t.Run("security context", func(t *testing.T) {
		pod := in.deployment.Spec.Template.Spec.SecurityContext
		require.NotNil(t, pod)
		assert.Equal(t, ptr(true), pod.RunAsNonRoot)
		assert.Equal(t, ptr(int64(65532)), pod.RunAsUser, "the distroless nonroot user")
		require.NotNil(t, pod.SeccompProfile)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SeccompProfile.Type)
		c := in.container.SecurityContext
		require.NotNil(t, c)
		assert.Equal(t, ptr(false), c.AllowPrivilegeEscalation)
		assert.Equal(t, ptr(true), c.ReadOnlyRootFilesystem)
		require.NotNil(t, c.Capabilities)
		assert.Equal(t, []corev1.Capability{"ALL"}, c.Capabilities.Drop)
		assert.Empty(t, c.Capabilities.Add)
		assert.False(t, in.container.Resources.Requests.Memory().IsZero(), "memory request")
		assert.False(t, in.container.Resources.Limits.Memory().IsZero(), "memory limit")
	})

	t.Run("rbac", func(t *testing.T) {
		sa := in.deployment.Spec.Template.Spec.ServiceAccountName
		bound := map[string]bool{}
		for _, u := range in.r.Find("ClusterRoleBinding") {
			b := typed[rbacv1.ClusterRoleBinding](t, u)
			require.Len(t, b.Subjects, 1)
			assert.Equal(t, rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: namespace}, b.Subjects[0])
			bound[b.RoleRef.Name] = true
		}
		main := typed[rbacv1.ClusterRole](t, in.r.Get("ClusterRole", release))
		assert.True(t, bound[main.Name], "the read-only ClusterRole is bound")
		assert.ElementsMatch(t, []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "statefulsets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"ha-injector.io"}, Resources: []string{"hapolicies"}, Verbs: []string{"get", "list", "watch"}},
		}, main.Rules, "read-only, and only what the cache watches")
		// Anything that can write is limited to the named objects of the release.
		for _, kind := range []string{"ClusterRole", "Role"} {
			for _, u := range in.r.Find(kind) {
				var rules []rbacv1.PolicyRule
				if kind == "Role" {
					rules = typed[rbacv1.Role](t, u).Rules
				} else {
					rules = typed[rbacv1.ClusterRole](t, u).Rules
				}
				for _, rule := range rules {
					assert.NotContains(t, rule.Verbs, "*", "%s %s", kind, u.GetName())
					assert.NotContains(t, rule.Resources, "*", "%s %s", kind, u.GetName())
					if onlyAsksTheAPIServer(rule) {
						continue
					}
					for _, verb := range rule.Verbs {
						if !slices.Contains([]string{"get", "list", "watch"}, verb) {
							assert.NotEmpty(t, rule.ResourceNames, "%s %s may %s %v: only with resourceNames", kind, u.GetName(), verb, rule.Resources)
							assert.NotContains(t, []string{"create", "delete", "deletecollection", "escalate", "bind", "impersonate"}, verb)
						}
					}
				}
			}
		}
	})

	t.Run("policies are valid", func(t *testing.T) {
		for _, u := range in.r.Find("HAPolicy") {
			p := typed[v1alpha1.HAPolicy](t, u)
			p.Default()
			assert.Empty(t, p.Validate(), "HAPolicy %s", p.Name)
		}
	})
}

func servicePort(t testing.TB, svc *corev1.Service, name string) corev1.ServicePort {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("Service %s has no port %q", svc.Name, name)
	return corev1.ServicePort{}
}

func tlsSecretName(t testing.TB, in installation) string {
	t.Helper()
	for _, v := range in.deployment.Spec.Template.Spec.Volumes {
		for _, m := range in.container.VolumeMounts {
			if m.Name == v.Name && m.MountPath == in.flag("webhook-cert-path") && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// certManagerObjects decodes every cert-manager object of the render strictly with
// cert-manager's own scheme.
func certManagerObjects(t testing.TB, r *chartrender.Result) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, d := range r.Documents {
		if d.Object.GroupVersionKind().Group != cmapi.SchemeGroupVersion.Group {
			continue
		}
		obj, err := certs.DecodeCertManager(d.YAML)
		require.NoError(t, err, "%s %s", d.Source, d.Object.GetName())
		objs = append(objs, obj)
	}
	return objs
}

func TestChartRenders(t *testing.T) {
	serviceKey := types.NamespacedName{Namespace: namespace, Name: release}
	cases := []struct {
		name   string
		values string
		check  func(t *testing.T, in installation)
	}{{
		name: "defaults: cert-manager CA chain, two replicas, a PDB and the default policy",
		check: func(t *testing.T, in installation) {
			objs := certManagerObjects(t, in.r)
			require.Len(t, objs, 4, "SelfSigned Issuer, CA Certificate, CA Issuer, serving Certificate")
			chain, err := certs.FindCertManagerChain(objs, types.NamespacedName{Namespace: namespace, Name: release + "-tls"})
			require.NoError(t, err)
			require.NoError(t, chain.Check(serviceKey))
			want := certs.NewCertManagerChain(certs.ChainOptions{
				Name: release, Service: serviceKey, ClusterDomain: "cluster.local",
				CADuration: 43800 * 3600e9, Duration: 2160 * 3600e9, RenewBefore: 720 * 3600e9,
			})
			assert.Equal(t, want.SelfSignedIssuer.Spec, chain.SelfSignedIssuer.Spec)
			assert.Equal(t, want.CA.Spec, chain.CA.Spec)
			assert.Equal(t, want.CAIssuer.Spec, chain.CAIssuer.Spec)
			assert.Equal(t, want.Serving.Spec, chain.Serving.Spec)
			assert.Equal(t, chain.Serving.Spec.SecretName, tlsSecretName(t, in), "the pod mounts the Secret cert-manager writes")
			assert.Equal(t, chain.InjectCAFrom(), in.webhooks.Annotations[cmapi.WantInjectAnnotation], "cainjector fills the caBundle from the serving Certificate")
			for _, h := range in.webhooks.Webhooks {
				assert.Empty(t, h.ClientConfig.CABundle, "the chart leaves the caBundle to cainjector")
				assert.Equal(t, admissionregistrationv1.Ignore, *h.FailurePolicy, "never block a deploy")
				assert.Equal(t, int32(5), *h.TimeoutSeconds)
			}
			assert.Equal(t, int32(2), *in.deployment.Spec.Replicas)
			pdb := typed[policyv1.PodDisruptionBudget](t, in.r.Get("PodDisruptionBudget", release))
			assert.Equal(t, intstr.FromInt32(1), *pdb.Spec.MinAvailable)
			pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			require.NoError(t, err)
			assert.True(t, pdbSel.Matches(labels.Set(in.deployment.Spec.Template.Labels)))
			anti := in.deployment.Spec.Template.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
			require.Len(t, anti, 1, "the webhook's own replicas spread over nodes")
			antiSel, err := metav1.LabelSelectorAsSelector(anti[0].PodAffinityTerm.LabelSelector)
			require.NoError(t, err)
			assert.True(t, antiSel.Matches(labels.Set(in.deployment.Spec.Template.Labels)))
			assert.Equal(t, corev1.LabelHostname, anti[0].PodAffinityTerm.TopologyKey)
			spec := in.deployment.Spec.Template.Spec
			assert.Equal(t, "system-cluster-critical", spec.PriorityClassName, "not preempted before the workloads it serves")
			assert.Equal(t, []corev1.Toleration{
				{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr[int64](v1alpha1.DefaultNotReady)},
				{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr[int64](v1alpha1.DefaultUnreachable)},
			}, spec.Tolerations, "the webhook's own pods leave a dead node as the default policy's do")
			require.Len(t, spec.TopologySpreadConstraints, 2)
			for i, key := range []string{corev1.LabelTopologyZone, corev1.LabelHostname} {
				c := spec.TopologySpreadConstraints[i]
				assert.Equal(t, key, c.TopologyKey)
				assert.Equal(t, corev1.ScheduleAnyway, c.WhenUnsatisfiable, "never leaves a replica pending")
				assert.Equal(t, int32(1), c.MaxSkew)
				assert.Equal(t, []string{"pod-template-hash"}, c.MatchLabelKeys)
				sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
				require.NoError(t, err)
				assert.True(t, sel.Matches(labels.Set(in.deployment.Spec.Template.Labels)), key)
			}
			policies := in.r.Find("HAPolicy")
			require.Len(t, policies, 1)
			assert.Equal(t, "default", policies[0].GetName())
			assert.Nil(t, in.r.Get("Secret", release+"-tls"), "cert-manager creates the Secret")
			assert.Empty(t, in.r.Find("Role"))
			assert.Empty(t, in.flags["cert-mode"], "file mode, serve's default")
			assert.Contains(t, in.r.Notes, "kubectl label namespace <your-namespace> ha-injector.io/policy=default")
			assert.Contains(t, in.r.Notes, "--dry-run=server")
			assert.Contains(t, in.r.Notes, "ha-injector doctor --release-namespace "+namespace, "NOTES says to run doctor after install")
			assert.NotContains(t, in.r.Notes, "WARNING")
			assert.NotContains(t, in.r.Notes, "metrics-reader", "no ServiceMonitor, no word about scraping")
			assert.Contains(t, in.r.Notes, "ha-sysctl init container runs ghcr.io/ha-injector/ha-injector:", "NOTES names the image every opted-in namespace must pull")
			assert.Contains(t, in.r.Notes, "podSecurity.defaultLevel=auto")
		},
	}, {
		name:   "cert-manager with an issuer of the user's: only the serving Certificate",
		values: `certManager: {issuerRef: {name: corp-ca, kind: ClusterIssuer}}`,
		check: func(t *testing.T, in installation) {
			objs := certManagerObjects(t, in.r)
			require.Len(t, objs, 1, "no CA chain of the chart's own")
			cert, ok := objs[0].(*cmapi.Certificate)
			require.True(t, ok)
			assert.Equal(t, "corp-ca", cert.Spec.IssuerRef.Name)
			assert.Equal(t, "ClusterIssuer", cert.Spec.IssuerRef.Kind)
			assert.Equal(t, "cert-manager.io", cert.Spec.IssuerRef.Group)
			require.NoError(t, certs.CheckServingCertificate(cert, serviceKey))
			assert.Equal(t, cert.Spec.SecretName, tlsSecretName(t, in))
			assert.Equal(t, namespace+"/"+cert.Name, in.webhooks.Annotations[cmapi.WantInjectAnnotation])
		},
	}, {
		name: "cert-manager off, selfManaged: an empty Secret, scoped write access, rotation flags",
		values: `
certManager: {enabled: false}
certs: {mode: selfManaged}`,
		check: func(t *testing.T, in installation) {
			assert.Empty(t, certManagerObjects(t, in.r))
			assert.NotContains(t, in.webhooks.Annotations, cmapi.WantInjectAnnotation)
			secret := typed[corev1.Secret](t, in.r.Get("Secret", release+"-tls"))
			assert.Empty(t, secret.Data, "ha-injector fills it")
			assert.Equal(t, secret.Name, tlsSecretName(t, in))
			assert.Equal(t, []string{"self-managed"}, in.flags["cert-mode"])
			assert.Equal(t, secret.Name, in.flag("cert-secret-name"))
			assert.Equal(t, namespace, in.flag("cert-secret-namespace"))
			assert.Equal(t, in.webhooks.Name, in.flag("webhook-configuration-name"))
			assert.Equal(t, certs.ServiceDNSNames(serviceKey, "cluster.local"), in.flags["cert-dns-name"])
			assert.Equal(t, "87600h", in.flag("cert-ca-duration"))
			assert.Equal(t, "8760h", in.flag("cert-duration"))
			assert.Equal(t, "2160h", in.flag("cert-renew-before"))
			assert.Equal(t, "12h", in.flag("cert-check-interval"))
			role := typed[rbacv1.Role](t, in.r.Get("Role", release+"-certs"))
			assert.ElementsMatch(t, []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret.Name}, Verbs: []string{"get", "update"}},
			}, role.Rules, "what webhook/selfmanaged_test.go proves serve needs, and no more")
			hooks := typed[rbacv1.ClusterRole](t, in.r.Get("ClusterRole", release+"-webhook-ca"))
			assert.ElementsMatch(t, []rbacv1.PolicyRule{
				{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{in.webhooks.Name}, Verbs: []string{"update"}},
			}, hooks.Rules)
		},
	}, {
		name: "cert-manager off, provided: the user's Secret and caBundle",
		values: `
certManager: {enabled: false}
certs: {mode: provided, provided: {secretName: my-webhook-tls, caBundle: ` + caBundle + `}}`,
		check: func(t *testing.T, in installation) {
			assert.Empty(t, certManagerObjects(t, in.r))
			assert.Empty(t, in.r.Find("Secret"), "the user's Secret is not the chart's to create")
			assert.Equal(t, "my-webhook-tls", tlsSecretName(t, in))
			want, err := base64.StdEncoding.DecodeString(caBundle)
			require.NoError(t, err)
			for _, h := range in.webhooks.Webhooks {
				assert.Equal(t, want, h.ClientConfig.CABundle, h.Name)
			}
			assert.Empty(t, in.r.Find("Role"))
		},
	}, {
		name:   "failurePolicy Fail and a longer timeout; the exemptions stay",
		values: `webhook: {failurePolicy: Fail, timeoutSeconds: 10, excludeNamespaces: [monitoring]}`,
		check: func(t *testing.T, in installation) {
			for _, h := range in.webhooks.Webhooks {
				assert.Equal(t, admissionregistrationv1.Fail, *h.FailurePolicy, h.Name)
				assert.Equal(t, int32(10), *h.TimeoutSeconds, h.Name)
				sel, err := metav1.LabelSelectorAsSelector(h.NamespaceSelector)
				require.NoError(t, err)
				assert.False(t, sel.Matches(labels.Set{corev1.LabelMetadataName: "monitoring", "ha-injector.io/policy": "default"}), "an excluded namespace is exempt even when labelled")
			}
		},
	}, {
		name: "extra policies next to the default one",
		values: `
defaultPolicy: {spec: {tolerations: {notReadySeconds: 20, unreachableSeconds: 20}}}
policies:
  strict: {antiAffinity: {type: Required}, sysctls: {method: Auto}}
  audit: {mode: Audit}`,
		check: func(t *testing.T, in installation) {
			got := map[string]*v1alpha1.HAPolicy{}
			for _, u := range in.r.Find("HAPolicy") {
				got[u.GetName()] = typed[v1alpha1.HAPolicy](t, u)
			}
			require.Len(t, got, 3)
			assert.Equal(t, ptr(int64(20)), got["default"].Spec.Tolerations.NotReadySeconds)
			assert.Equal(t, v1alpha1.AntiAffinityType("Required"), got["strict"].Spec.AntiAffinity.Type)
			assert.Equal(t, v1alpha1.Mode("Audit"), got["audit"].Spec.Mode)
		},
	}, {
		name:   "one replica: no PodDisruptionBudget (it would block node drains) and a warning",
		values: `replicaCount: 1`,
		check: func(t *testing.T, in installation) {
			assert.Equal(t, int32(1), *in.deployment.Spec.Replicas)
			assert.Nil(t, in.r.Get("PodDisruptionBudget", release))
			assert.Contains(t, in.r.Notes, "WARNING: replicaCount is 1")
		},
	}, {
		name:   "ServiceMonitor scrapes the Service's metrics port",
		values: `metrics: {serviceMonitor: {enabled: true, labels: {release: prometheus}}}`,
		check: func(t *testing.T, in installation) {
			sm := in.r.Get("ServiceMonitor", release)
			require.NotNil(t, sm)
			assert.Equal(t, "prometheus", sm.GetLabels()["release"])
			endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			require.Len(t, endpoints, 1)
			assert.Equal(t, "metrics", endpoints[0].(map[string]any)["port"])
			servicePort(t, in.service, "metrics")
			sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
			assert.True(t, labels.SelectorFromSet(sel).Matches(labels.Set(in.service.Labels)), "the ServiceMonitor selects the Service")
			reader := in.r.Get("ClusterRole", release+"-metrics-reader")
			require.NotNil(t, reader)
			assert.Contains(t, in.r.Notes, "--clusterrole="+reader.GetName()+" --serviceaccount=", "NOTES says to bind the metrics reader role to Prometheus")
		},
	}, {
		name:   "image by digest, priority class, pod placement",
		values: `{image: {digest: "sha256:` + strings.Repeat("ab", 32) + `"}, priorityClassName: system-cluster-critical, nodeSelector: {kubernetes.io/os: linux}, affinity: {nodeAffinity: {}}}`,
		check: func(t *testing.T, in installation) {
			assert.Equal(t, "ghcr.io/ha-injector/ha-injector@sha256:"+strings.Repeat("ab", 32), in.container.Image)
			assert.Contains(t, in.container.Args, "--sysctl-image=ghcr.io/ha-injector/ha-injector@sha256:"+strings.Repeat("ab", 32),
				"the injected ha-sysctl runs the very image the webhook runs, pinned by the same digest")
			spec := in.deployment.Spec.Template.Spec
			assert.Equal(t, "system-cluster-critical", spec.PriorityClassName)
			assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, spec.NodeSelector)
			assert.Nil(t, spec.Affinity.PodAntiAffinity, "a user's affinity replaces the default")
		},
	}, {
		name:   "the webhook's own tolerations follow the default policy; spread and priority can be replaced",
		values: `{defaultPolicy: {spec: {tolerations: {notReadySeconds: 40}}}, tolerations: [{key: dedicated, operator: Exists}], priorityClassName: "", topologySpreadConstraints: [{maxSkew: 2, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]}`,
		check: func(t *testing.T, in installation) {
			spec := in.deployment.Spec.Template.Spec
			require.Len(t, spec.Tolerations, 3)
			assert.Equal(t, int64(40), *spec.Tolerations[0].TolerationSeconds, "not-ready from defaultPolicy.spec")
			assert.Equal(t, v1alpha1.DefaultUnreachable, *spec.Tolerations[1].TolerationSeconds, "unreachable keeps the policy default")
			assert.Equal(t, "dedicated", spec.Tolerations[2].Key, "the user's tolerations are added")
			assert.Empty(t, spec.PriorityClassName)
			require.Len(t, spec.TopologySpreadConstraints, 1, "the user's constraints replace the default")
			assert.Equal(t, corev1.DoNotSchedule, spec.TopologySpreadConstraints[0].WhenUnsatisfiable)
		},
	}, {
		name:   "a default policy without tolerations gives the webhook none; 0 s is kept",
		values: `{defaultPolicy: {spec: {tolerations: {enabled: false}}}}`,
		check: func(t *testing.T, in installation) {
			assert.Empty(t, in.deployment.Spec.Template.Spec.Tolerations)
			r, err := render(t, `{defaultPolicy: {spec: {tolerations: {notReadySeconds: 0, unreachableSeconds: 0}}}}`)
			require.NoError(t, err)
			tolerations := decode(t, r).deployment.Spec.Template.Spec.Tolerations
			require.Len(t, tolerations, 2)
			assert.Equal(t, int64(0), *tolerations[0].TolerationSeconds)
			assert.Equal(t, int64(0), *tolerations[1].TolerationSeconds)
		},
	}, {
		name:   "the ha-sysctl image defaults to the chart's own and follows a mirror",
		values: `{image: {repository: mirror.example/ha-injector, tag: v9.9.9}}`,
		check: func(t *testing.T, in installation) {
			assert.Contains(t, in.container.Args, "--sysctl-image=mirror.example/ha-injector:v9.9.9")
			assert.Contains(t, in.container.Args, "--pod-security-default-level=auto")
			assert.Contains(t, in.container.Args, "--pod-security-default-version=latest")
		},
	}, {
		name:   "sysctlImage and podSecurity set explicitly",
		values: `{sysctlImage: {repository: tools.example/ha-sysctl, tag: "1.0"}, podSecurity: {defaultLevel: baseline, defaultVersion: v1.30}}`,
		check: func(t *testing.T, in installation) {
			assert.Contains(t, in.container.Args, "--sysctl-image=tools.example/ha-sysctl:1.0")
			assert.Contains(t, in.container.Args, "--pod-security-default-level=baseline")
			assert.Contains(t, in.container.Args, "--pod-security-default-version=v1.30")
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render(t, tc.values)
			require.NoError(t, err)
			in := decode(t, r)
			checkInvariants(t, in)
			tc.check(t, in)
		})
	}
}

// TestChartRejectsBadValues: a mistake in values fails the install with a message that
// names the value, instead of installing something that silently does not work.
func TestChartRejectsBadValues(t *testing.T) {
	cases := []struct{ name, values, want string }{
		{"an unknown top-level key", `replicas: 3`, "replicas"},
		{"an unknown nested key", `webhook: {failurePolicyy: Fail}`, "failurePolicyy"},
		{"a wrong type", `replicaCount: two`, "replicaCount"},
		{"a failurePolicy the API server does not know", `webhook: {failurePolicy: Sometimes}`, "failurePolicy"},
		{"a timeout above the API server's 30 s maximum", `webhook: {timeoutSeconds: 60}`, "timeoutSeconds"},
		{"a duration in words", `certManager: {duration: 90 days}`, "duration"},
		{"a policy field with a typo", `policies: {strict: {tolerations: {notReadySecond: 10}}}`, "notReadySecond"},
		{"a policy value out of range", `defaultPolicy: {spec: {tolerations: {notReadySeconds: 99999}}}`, "notReadySeconds"},
		{"a policy name that is not a DNS name", `policies: {Strict_Policy: {}}`, "Strict_Policy"},
		{"certs.mode without turning cert-manager off", `certs: {mode: selfManaged}`, "set certManager.enabled=false"},
		{"cert-manager off without another mode", `certManager: {enabled: false}`, "certs.mode"},
		{"provided without its Secret", `{certManager: {enabled: false}, certs: {mode: provided, provided: {caBundle: ` + caBundle + `}}}`, "certs.provided.secretName"},
		{"provided without its CA", `{certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s}}}`, "certs.provided.caBundle"},
		{"a second policy named default", `policies: {default: {}}`, "defaultPolicy.spec"},
		{"an issuer kind cert-manager does not have", `certManager: {issuerRef: {name: x, kind: Vault}}`, "kind"},
		{"a Pod Security level that does not exist", `podSecurity: {defaultLevel: strict}`, "defaultLevel"},
		{"a Pod Security version that is not v1.N", `podSecurity: {defaultVersion: "1.30"}`, "defaultVersion"},
		{"a memory limit that is not a quantity", `resources: {limits: {memory: lots}}`, `"lots" is not a quantity`},
		{"a large-request budget in words", `webhook: {largeRequestBudget: "16 megabytes"}`, "largeRequestBudget"},
		{"a caBundle that is PEM, not base64", `{certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s, caBundle: "-----BEGIN CERTIFICATE-----"}}}`, "caBundle"},
		{"a TLS version the webhook does not offer", `webhook: {tlsMinVersion: "1.1"}`, "tlsMinVersion"},
		{"metrics.secure in words", `metrics: {secure: "yes please"}`, "secure"},
		{"a NetworkPolicy port out of range", `networkPolicy: {enabled: true, apiServer: {ports: [70000]}}`, "ports"},
		{"a NetworkPolicy CIDR that is an address", `networkPolicy: {enabled: true, apiServer: {cidrs: [10.0.0.1]}}`, "cidrs"},
		{"an unknown NetworkPolicy key", `networkPolicy: {enable: true}`, "enable"},
		{"an unknown PrometheusRule key", `prometheusRule: {enabled: true, severity: page}`, "severity"},
		{"crds.upgrade in words", `crds: {upgrade: always}`, "upgrade"},
		{"an admission mode that does not exist", `admission: {mode: both}`, "mode"},
		{"an unknown admission key", `admission: {mod: native}`, "mod"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.values)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestGoMemLimitLeavesRoomForTheBinary: the chart turns the container's memory limit,
// in any of the units Kubernetes accepts, into GOMEMLIMIT in bytes: the limit less 10% or
// 32Mi, whichever is more (the Go runtime does not count the binary's resident code),
// and never under half the limit.
func TestGoMemLimitLeavesRoomForTheBinary(t *testing.T) {
	for values, want := range map[string]string{
		``:                                         "100663296", // 128Mi - 32Mi
		`resources: {limits: {memory: 1Gi}}`:       "966367641", // 90%
		`resources: {limits: {memory: 1.5Gi}}`:     "1449551462",
		`resources: {limits: {memory: 500M}}`:      "450000000",
		`resources: {limits: {memory: 262144k}}`:   "228589568", // 250Mi: 32Mi is more than its 10%
		`resources: {limits: {memory: 134217728}}`: "100663296",
		`resources: {limits: {memory: 48Mi}}`:      "25165824", // half
		`resources: {limits: {memory: null}}`:      "",
		`resources: {limits: null}`:                "",
	} {
		t.Run(values, func(t *testing.T) {
			r, err := render(t, values)
			require.NoError(t, err)
			in := decode(t, r)
			got := ""
			for _, e := range in.container.Env {
				if e.Name == "GOMEMLIMIT" {
					got = e.Value
				}
			}
			assert.Equal(t, want, got)
			if limit, ok := in.container.Resources.Limits[corev1.ResourceMemory]; ok {
				l := float64(limit.Value())
				assert.InDelta(t, max(l/2, min(0.9*l, l-32<<20)), mustAtoi(t, got), 1)
			}
		})
	}
}

func mustAtoi(t *testing.T, s string) float64 {
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err)
	return float64(n)
}

// TestChartLints runs helm lint's rules over the chart with the defaults and with each
// documented switch.
func TestChartLints(t *testing.T) {
	for _, values := range []string{
		``,
		`{certManager: {enabled: false}, certs: {mode: selfManaged}}`,
		`{certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s, caBundle: ` + caBundle + `}}}`,
		`{webhook: {failurePolicy: Fail}, replicaCount: 1, metrics: {serviceMonitor: {enabled: true}}}`,
		nativeValues,
	} {
		t.Run(values, func(t *testing.T) {
			linter := lint.RunAll(filepath.Join(repoRoot, chartrender.ChartDir), parseValues(t, values), namespace)
			for _, m := range linter.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
			assert.Less(t, linter.HighestSeverity, support.WarningSev)
		})
	}
}

// TestChartDefaultRenderGolden keeps `helm template` of the defaults (CRD included) in
// testdata/default.golden.yaml, and of admission.mode=native in native.golden.yaml, so a
// review sees every change to what users install. Refresh with `make golden`.
func TestChartDefaultRenderGolden(t *testing.T) {
	c, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	for file, values := range map[string]string{"default.golden.yaml": ``, "native.golden.yaml": nativeValues} {
		t.Run(file, func(t *testing.T) {
			r, err := chartrender.Render(c, parseValues(t, values), chartrender.Options{ReleaseName: release, Namespace: namespace, IncludeCRDs: true})
			require.NoError(t, err)
			golden.Check(t, filepath.Join("testdata", file), []byte(r.Manifest))
		})
	}
}

var repoRoot = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..")
}()
