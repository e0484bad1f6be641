package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
)

// TestCompileAppliedInjects applies what compile prints for examples/policy-strict.yaml to
// a real API server, as a GitOps user would, with the HAPolicy itself: a pod created in a
// namespace labelled with the policy's name is injected by the API server, with no serve.
func TestCompileAppliedInjects(t *testing.T) {
	ctx, pc := startPreviewCluster(t)
	r := runCLI(t, "", "compile", "--policy", "../../examples/policy-strict.yaml", "--name", "compiled", "--sysctl-image", "registry.example/ha-injector:v9")
	require.Equal(t, 0, r.code, r.stderr)
	docs := splitDocs(r.stdout)
	require.Len(t, docs, 4, "the two admission policies and the policy's two bindings")
	kinds := []string{}
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal([]byte(d), &u.Object))
		kinds = append(kinds, u.GetKind())
		require.NoError(t, pc.c.Create(ctx, u), "applying the %s", u.GetKind())
	}
	assert.Equal(t, []string{"MutatingAdmissionPolicy", "ValidatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBinding"}, kinds)

	list, err := preview.ReadPolicies("../../examples/policy-strict.yaml")
	require.NoError(t, err)
	require.Len(t, list, 1)
	strict := list[0]
	require.NoError(t, pc.c.Create(ctx, strict))
	var m admissionregistrationv1.MutatingAdmissionPolicyBinding
	require.NoError(t, pc.c.Get(ctx, client.ObjectKey{Name: "compiled-" + strict.Name}, &m))
	assert.Equal(t, strict.Name, m.Spec.ParamRef.Name)

	ns := "compiled-" + strict.Name
	require.NoError(t, pc.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policies.PolicyLabel: strict.Name}}}))
	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		require.NoError(t, pc.c.Create(ctx, pod, client.DryRunAll))
		return pod.Annotations[policies.StatusAnnotation] != ""
	}, 30*time.Second, 100*time.Millisecond, "the API server applies the compiled policy")
	require.NotEmpty(t, pod.Spec.InitContainers)
	assert.Equal(t, "registry.example/ha-injector:v9", pod.Spec.InitContainers[0].Image)
	assert.Contains(t, pod.Annotations[policies.StatusAnnotation], `"native":true`)
}

func TestCompileUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no policies named", []string{"compile"}, exitUsage, "--policy FILE or --cluster"},
		{"both", []string{"compile", "--policy", "x.yaml", "--cluster"}, exitUsage, "exclude each other"},
		{"a file of something else", []string{"compile", "--policy", "../../examples/web-server.yaml"}, exitUsage, "web-server.yaml: document 1: unknown field"},
		{"a missing file", []string{"compile", "--policy", "does-not-exist.yaml"}, exitUsage, "does-not-exist.yaml"},
		{"a bad image", []string{"compile", "--policy", "../../examples/policy-strict.yaml", "--sysctl-image", "a b"}, exitUsage, "--sysctl-image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "", tc.args...)
			assert.Equal(t, tc.code, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			assert.Empty(t, strings.TrimSpace(r.stdout))
		})
	}
}
