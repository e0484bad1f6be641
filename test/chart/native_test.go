package chart

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
)

// nativeValues turns admission.mode=native on.
const nativeValues = `{admission: {mode: native}}`

// mutatingAdmissionPolicyAPI is what Helm's discovery lists where the API server serves
// MutatingAdmissionPolicy in admissionregistration.k8s.io/v1 (Kubernetes 1.36+).
const mutatingAdmissionPolicyAPI = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"

func renderWith(t testing.TB, values string, opts chartrender.Options) (*chartrender.Result, error) {
	t.Helper()
	c, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	if opts.ReleaseName == "" {
		opts.ReleaseName, opts.Namespace = release, namespace
	}
	return chartrender.Render(c, parseValues(t, values), opts)
}

// nativePolicies are the admission policies of a native render, decoded; the test fails
// unless there is one of each named name.
func nativePolicies(t testing.TB, r *chartrender.Result, name string) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicy) {
	t.Helper()
	require.Len(t, r.Find("MutatingAdmissionPolicy"), 1)
	return typed[admissionregistrationv1.MutatingAdmissionPolicy](t, r.Get("MutatingAdmissionPolicy", name)),
		typed[admissionregistrationv1.ValidatingAdmissionPolicy](t, r.Get("ValidatingAdmissionPolicy", name))
}

// TestChartNativePoliciesAreTheCompiledOnes: the admission policies the chart renders
// from files/native (hack/generate.sh) with its values filled in are the ones
// internal/native compiles for the same settings, as serve's flags give them to the
// webhook: the sysctl image, the images a policy may name, the Pod Security default, and
// the namespaces never mutated.
func TestChartNativePoliciesAreTheCompiledOnes(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	cases := []struct {
		name, values string
		opts         chartrender.Options
		want         native.Options
	}{{
		name:   "the defaults: the chart's own image, privileged (auto, not OpenShift)",
		values: nativeValues,
		want: native.Options{Name: release, ExcludeNamespaces: []string{namespace}, Settings: policies.NativeSettings{
			SysctlImage: "ghcr.io/ha-injector/ha-injector:0.1.0",
			PodSecurity: policies.PodSecurityDefault{Level: policies.PodSecurityPrivileged, Version: "latest"},
		}},
	}, {
		name: "a mirror by digest, allowed images, Pod Security baseline v1.30, excluded namespaces, another release",
		values: `{admission: {mode: native}, image: {repository: mirror.example/ha-injector, digest: "` + digest + `"},
  sysctlImage: {allowed: [mirror.example/ha-injector, "tools.example/busybox:1.37"]},
  podSecurity: {defaultLevel: baseline, defaultVersion: v1.30},
  webhook: {excludeNamespaces: [monitoring, kube-system]}}`,
		opts: chartrender.Options{ReleaseName: "platform", Namespace: "infra"},
		want: native.Options{Name: "platform-ha-injector", ExcludeNamespaces: []string{"infra", "monitoring", "kube-system"}, Settings: policies.NativeSettings{
			SysctlImage:         "mirror.example/ha-injector@" + digest,
			AllowedSysctlImages: []string{"mirror.example/ha-injector", "tools.example/busybox:1.37"},
			PodSecurity:         policies.PodSecurityDefault{Level: policies.PodSecurityBaseline, Version: "v1.30"},
		}},
	}, {
		name:   "auto on OpenShift is restricted, as serve detects it",
		values: `{admission: {mode: native}, fullnameOverride: injector, sysctlImage: {repository: tools.example/ha-sysctl, tag: "2.0"}}`,
		opts:   chartrender.Options{APIVersions: []string{"security.openshift.io/v1"}},
		want: native.Options{Name: "injector", ExcludeNamespaces: []string{namespace}, Settings: policies.NativeSettings{
			SysctlImage: "tools.example/ha-sysctl:2.0",
			PodSecurity: policies.PodSecurityDefault{Level: policies.PodSecurityRestricted, Version: "latest"},
		}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := renderWith(t, tc.values, tc.opts)
			require.NoError(t, err)
			m, v := nativePolicies(t, r, tc.want.Name)
			wantM, wantV := native.MutatingPolicy(tc.want), native.ValidatingPolicy(tc.want)
			assert.Equal(t, wantM.TypeMeta, m.TypeMeta)
			assert.Equal(t, yamlOf(t, wantM.Spec), yamlOf(t, m.Spec), "the MutatingAdmissionPolicy")
			assert.Equal(t, wantV.TypeMeta, v.TypeMeta)
			assert.Equal(t, yamlOf(t, wantV.Spec), yamlOf(t, v.Spec), "the ValidatingAdmissionPolicy")
			assert.Equal(t, r.Get("Service", tc.want.Name).GetLabels(), m.Labels, "the chart's labels")
			settings, ok := native.SettingsOf(m)
			require.True(t, ok, "the settings annotation preview --cluster and doctor read: %v", m.Annotations)
			assert.Equal(t, tc.want.Settings, settings)
			assert.Equal(t, slices.Sorted(maps.Keys(wantM.Annotations)), slices.Sorted(maps.Keys(m.Annotations)), "the annotations internal/native writes")
			assert.NotContains(t, r.Manifest, "@@", "every placeholder is filled in")
		})
	}
}

// TestChartAdmissionModeAuto: auto is native where the API server serves
// MutatingAdmissionPolicy in admissionregistration.k8s.io/v1 (as Helm discovers it),
// else webhook; the group version alone (served since 1.16) or the beta is not enough.
func TestChartAdmissionModeAuto(t *testing.T) {
	for _, tc := range []struct {
		name        string
		apiVersions []string
		native      bool
	}{
		{"helm template without --api-versions", nil, false},
		{"admissionregistration.k8s.io/v1 without the kind", []string{"admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"}, false},
		{"the beta only", []string{"admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy"}, false},
		{"v1 MutatingAdmissionPolicy served", []string{"admissionregistration.k8s.io/v1", mutatingAdmissionPolicyAPI}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := renderWith(t, `{admission: {mode: auto}}`, chartrender.Options{APIVersions: tc.apiVersions})
			require.NoError(t, err)
			assert.Equal(t, tc.native, r.Get("MutatingAdmissionPolicy", release) != nil, "the MutatingAdmissionPolicy")
			assert.Equal(t, !tc.native, r.Get("MutatingWebhookConfiguration", release) != nil, "the MutatingWebhookConfiguration")
			args := typed[appsv1.Deployment](t, r.Get("Deployment", release)).Spec.Template.Spec.Containers[0].Args
			assert.Equal(t, tc.native, slices.Contains(args, "--admission-mode=native"), "%v", args)
		})
	}
	// webhook and native are what they say, whatever the API server serves.
	for mode, native := range map[string]bool{"webhook": false, "native": true} {
		for _, apis := range [][]string{nil, {mutatingAdmissionPolicyAPI}} {
			r, err := renderWith(t, `{admission: {mode: `+mode+`}}`, chartrender.Options{APIVersions: apis})
			require.NoError(t, err)
			assert.Equal(t, native, r.Get("MutatingAdmissionPolicy", release) != nil, "%s with %v", mode, apis)
		}
	}
}

// TestChartNativeInstallsNoWebhook: in native mode no MutatingWebhookConfiguration, no
// certificate of any mode and no https port; serve runs with --admission-mode=native for
// the chart's policies (as doctor's native-serve check finds it) and its probes and
// metrics; its RBAC is what it needs.
func TestChartNativeInstallsNoWebhook(t *testing.T) {
	for _, values := range []string{
		nativeValues,
		`{admission: {mode: native}, certManager: {enabled: false}, certs: {mode: selfManaged}}`,
		`{admission: {mode: native}, certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s, caBundle: ` + caBundle + `}}, networkPolicy: {enabled: true}}`,
		`{admission: {mode: native}, certManager: {enabled: false}}`,
	} {
		t.Run(values, func(t *testing.T) {
			r, err := render(t, values)
			require.NoError(t, err)
			assert.Empty(t, r.Find("MutatingWebhookConfiguration"))
			assert.Empty(t, certManagerObjects(t, r), "no cert-manager objects")
			assert.Empty(t, r.Find("Secret"), "no certificate Secret")
			assert.Nil(t, r.Get("ValidatingAdmissionPolicy", release+"-webhook-ca"))
			assert.Nil(t, r.Get("ClusterRole", release+"-webhook-ca"))
			assert.Empty(t, r.Find("Role"))

			dep := typed[appsv1.Deployment](t, r.Get("Deployment", release))
			c := dep.Spec.Template.Spec.Containers[0]
			assert.Equal(t, []string{
				"serve",
				"--admission-mode=native",
				"--native-policy-name=" + release,
				"--tls-min-version=1.3",
				"--graceful-shutdown-timeout=10s",
				"--health-probe-bind-address=:8081",
				"--metrics-bind-address=:8080",
				"--metrics-secure=true",
				"--zap-log-level=info",
			}, c.Args)
			assert.Empty(t, c.VolumeMounts, "no certificate to mount")
			assert.Empty(t, dep.Spec.Template.Spec.Volumes)
			var ports []string
			for _, p := range c.Ports {
				ports = append(ports, p.Name)
			}
			assert.Equal(t, []string{"metrics", "healthz"}, ports)
			svc := typed[corev1.Service](t, r.Get("Service", release))
			require.Len(t, svc.Spec.Ports, 1)
			assert.Equal(t, "metrics", svc.Spec.Ports[0].Name, "no https port: nothing calls serve")
			if np := r.Get("NetworkPolicy", release); np != nil {
				assert.NotContains(t, np.Object["spec"].(map[string]any)["ingress"], map[string]any{"ports": []any{map[string]any{"port": int64(9443), "protocol": "TCP"}}}, "no webhook port open")
			}
			assert.Contains(t, r.Notes, "Admission mode: native")
			assert.Contains(t, r.Notes, "run ha-check", "the dry run by hand creates a pod: Deployments are not mutated")
			checkNativeRBAC(t, r, release, namespace, release)
		})
	}
}

// checkNativeRBAC: serve may read nodes and HAPolicies, write HAPolicy status, read the
// chart's MutatingAdmissionPolicy and create and update admission policy bindings, and
// nothing else; no role of the chart may write an admission policy or delete a binding.
func checkNativeRBAC(t *testing.T, r *chartrender.Result, fullname, ns, sa string) {
	t.Helper()
	main := typed[rbacv1.ClusterRole](t, r.Get("ClusterRole", fullname))
	assert.ElementsMatch(t, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"ha-injector.io"}, Resources: []string{"hapolicies"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"ha-injector.io"}, Resources: []string{"hapolicies/status"}, Verbs: []string{"update"}},
	}, main.Rules)
	bindings := typed[rbacv1.ClusterRole](t, r.Get("ClusterRole", fullname+"-bindings"))
	assert.ElementsMatch(t, []rbacv1.PolicyRule{
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingadmissionpolicies"}, ResourceNames: []string{fullname}, Verbs: []string{"get"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingadmissionpolicybindings", "validatingadmissionpolicybindings"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
	}, bindings.Rules)
	for _, u := range r.Find("ClusterRoleBinding") {
		b := typed[rbacv1.ClusterRoleBinding](t, u)
		assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}, b.Subjects)
	}
	for _, u := range r.Find("ClusterRole") {
		for _, rule := range typed[rbacv1.ClusterRole](t, u).Rules {
			for _, res := range rule.Resources {
				if strings.HasSuffix(res, "admissionpolicies") {
					assert.Equal(t, []string{"get"}, rule.Verbs, "ClusterRole %s may not write %s", u.GetName(), res)
				}
				if strings.HasSuffix(res, "admissionpolicybindings") {
					assert.NotContains(t, rule.Verbs, "delete", "ClusterRole %s", u.GetName())
				}
			}
		}
	}
	assert.Empty(t, r.Find("MutatingAdmissionPolicyBinding"), "the chart binds nothing of native mode itself: serve binds each HAPolicy")
	for _, u := range r.Find("ValidatingAdmissionPolicyBinding") {
		b := typed[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, u)
		assert.Equal(t, fullname+"-hapolicy-warnings", b.Spec.PolicyName, "the chart binds only its warnings about HAPolicies: serve binds each HAPolicy")
	}
}

// TestChartNativeRefusesImagesThatBreakCEL: the images native mode pastes into CEL
// string literals (inside YAML strings) hold no whitespace, quote or backslash: the
// schema refuses them in every mode, and should it be skipped
// (--skip-schema-validation), native mode's template does.
func TestChartNativeRefusesImagesThatBreakCEL(t *testing.T) {
	for _, bad := range []struct{ name, values string }{
		{"a double quote in sysctlImage.repository", `{sysctlImage: {repository: 'evil" || true || "'}}`},
		{"a single quote in sysctlImage.tag", `{sysctlImage: {tag: "1.0'"}}`},
		{"a backslash in an allowed image", `{sysctlImage: {allowed: ['registry.example/x\y']}}`},
		{"a quote in image.repository", `{image: {repository: 'ghcr.io/x"'}}`},
		{"a quote in image.tag", `{image: {tag: '1"'}}`},
		{"a space in an allowed image", `{sysctlImage: {allowed: ["a b"]}}`},
	} {
		t.Run(bad.name, func(t *testing.T) {
			for _, mode := range []string{"webhook", "native"} {
				values := parseValues(t, bad.values)
				values["admission"] = map[string]any{"mode": mode}
				c, err := chartrender.Load(repoRoot)
				require.NoError(t, err)
				_, err = chartrender.Render(c, values, chartrender.Options{ReleaseName: release, Namespace: namespace})
				require.Error(t, err, mode)
				assert.Contains(t, err.Error(), "values don't meet the specifications of the schema", mode)
			}
			values := parseValues(t, bad.values)
			values["admission"] = map[string]any{"mode": "native"}
			c, err := chartrender.Load(repoRoot)
			require.NoError(t, err)
			_, err = chartrender.Render(c, values, chartrender.Options{ReleaseName: release, Namespace: namespace, SkipSchemaValidation: true})
			require.Error(t, err, "the template refuses it too")
			assert.Contains(t, err.Error(), "must not contain whitespace, quotes or backslashes")
		})
	}
}

// yamlOf is v as YAML, so that a difference shows as a diff of lines.
func yamlOf(t testing.TB, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
