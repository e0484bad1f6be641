// Package doctor_test checks doctor against a native installation, on an API server of
// its own: doctor reads the whole cluster, which the other native tests fill.
package doctor_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// TestDoctorNative: doctor finds a native installation (no webhook configuration), says
// so, checks each HAPolicy's bindings and status and that a dry-run pod is injected by
// the API server, reads the API server's counts of the policy's evaluations, and fails
// when a binding is missing; it names the Deployments webhook mode injected.
func TestDoctorNative(t *testing.T) {
	cfg := testenv.Start(t)
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()

	o := native.Options{Name: "doctored", Settings: policies.NativeSettings{SysctlImage: "registry.example/ha-injector:v3"}}
	for _, p := range []*v1alpha1.HAPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "doc-default"}}, {ObjectMeta: metav1.ObjectMeta{Name: "doc-audit"}, Spec: v1alpha1.HAPolicySpec{Mode: v1alpha1.ModeAudit}}} {
		require.NoError(t, c.Create(ctx, p))
		p.Status = v1alpha1.HAPolicyStatus{TopologyDomains: map[string]int32{corev1.LabelHostname: 3, corev1.LabelTopologyZone: 1}, ObservedGeneration: p.Generation}
		require.NoError(t, c.Status().Update(ctx, p))
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Labels: map[string]string{policies.PolicyLabel: p.Name}}}))
	}
	for _, obj := range native.Objects(o, []string{"doc-default", "doc-audit"}) {
		require.NoError(t, c.Create(ctx, obj))
	}
	// serve's Deployment (nothing runs it here) and one that webhook mode injected.
	serve := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "doctored", Labels: map[string]string{"app.kubernetes.io/name": "ha-injector"}},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "doctored"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "doctored"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "ha-injector", Image: "registry.example/ha-injector:v3", Args: []string{"serve", "--admission-mode=native", "--native-policy-name=doctored"},
			}}}}},
	}
	require.NoError(t, c.Create(ctx, serve))
	old := serve.DeepCopy()
	old.Name, old.Namespace, old.Labels = "legacy", "doc-default", map[string]string{policies.InjectedLabel: "true"}
	old.ResourceVersion, old.UID = "", ""
	require.NoError(t, c.Create(ctx, old))

	run := func() map[string]doctor.Check {
		r, err := doctor.Run(ctx, cfg, doctor.Options{})
		if !assert.NoError(t, err) {
			return nil
		}
		out := map[string]doctor.Check{}
		for _, ch := range r.Checks {
			if prev, ok := out[ch.Name]; ok && prev.Status != doctor.OK {
				continue // the first check of a name that is not ok
			}
			out[ch.Name] = ch
		}
		return out
	}
	var checks map[string]doctor.Check
	if !assert.Eventually(t, func() bool {
		checks = run()
		return checks["probe"].Status == doctor.OK
	}, 60*time.Second, 200*time.Millisecond, "the bindings take effect") {
		t.Fatalf("the checks: %+v", checks)
	}

	assert.Equal(t, doctor.OK, checks["admission-mode"].Status, checks["admission-mode"].Message)
	assert.Contains(t, checks["admission-mode"].Message, "native: MutatingAdmissionPolicy doctored")
	assert.NotContains(t, checks, "webhook-configuration", "no webhook mode to check")
	assert.Equal(t, doctor.OK, checks["native-bindings"].Status, checks["native-bindings"].Message)
	assert.Contains(t, checks["native-bindings"].Message, "without an error", "the API server's counts were read")
	assert.Contains(t, checks["probe"].Message, "by the API server (native mode)")
	assert.Equal(t, doctor.Warn, checks["native-serve"].Status, "nothing runs serve's Deployment: %s", checks["native-serve"].Message)
	assert.Equal(t, doctor.Warn, checks["webhook-injected"].Status)
	assert.Contains(t, checks["webhook-injected"].Message, "doc-default/legacy")

	// A binding gone: the pods of its namespace are no longer injected.
	require.NoError(t, c.Delete(ctx, &admissionregistrationv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: native.BindingName(o, "doc-default")}}))
	checks = run()
	assert.Equal(t, doctor.Fail, checks["native-bindings"].Status)
	assert.True(t, strings.Contains(checks["native-bindings"].Message, "HAPolicy doc-default has no MutatingAdmissionPolicyBinding doctored-doc-default"), checks["native-bindings"].Message)
}
