package doctor_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

const (
	release          = "ha-injector"
	releaseNamespace = "ha-system"
)

// TestChartInstallWithCertManager installs, for real, what the chart renders with its
// defaults (certificates from cert-manager, the webhook behind its Service) into
// ha-system, and plays the part of the controllers this API server does not run:
// cert-manager issues the Secret and marks its Certificate and Issuer Ready, cainjector
// writes the caBundle, the Deployment controller reports available replicas, and the
// EndpointSlice controller the Service's endpoints. The webhook configuration's
// namespaceSelector is narrowed to no namespace, so the API server never calls its
// Service. The checks of the webhook's pods and certificates must see each fault.
func TestChartInstallWithCertManager(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	installCertManagerCRDs(t, f)
	ca, err := certs.NewCA("ha-injector-ca", 365*24*time.Hour)
	require.NoError(t, err)
	mwcName := installChart(t, f, ca.PEM)
	t.Cleanup(func() {
		_ = f.c.Delete(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: mwcName}})
	})
	servingSecret(t, f, ca, 90*24*time.Hour)
	markReady(t, f)

	opts := doctor.Options{ReleaseNamespace: releaseNamespace}
	r := f.run(t, opts)
	t.Log("\n" + text(r))
	for _, name := range []string{"webhook-configuration", "serving-certificate", "cert-manager", "webhook-pods"} {
		assert.Equal(t, doctor.OK, one(t, r, name).Status, name)
	}
	assert.Contains(t, one(t, r, "serving-certificate").Message, "(Secret ha-system/ha-injector-tls) for ha-injector.ha-system.svc")
	assert.Contains(t, one(t, r, "cert-manager").Message, "Certificate ha-system/ha-injector-tls Ready (notAfter ")
	assert.Contains(t, one(t, r, "cert-manager").Message, "issuer Issuer ha-system/ha-injector-ca Ready, its CA injected into the caBundle")
	assert.Contains(t, one(t, r, "webhook-pods").Message, "2 of 2 replicas available; Service ha-system/ha-injector: 2 ready endpoints")

	t.Run("two installations need --release-namespace", func(t *testing.T) {
		c := one(t, f.run(t, doctor.Options{}), "webhook-configuration")
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Contains(t, c.Message, "2 MutatingWebhookConfigurations have a webhook named pods.ha-injector.io")
	})

	t.Run("a certificate close to its expiry", func(t *testing.T) {
		servingSecret(t, f, ca, 3*24*time.Hour)
		t.Cleanup(func() { servingSecret(t, f, ca, 90*24*time.Hour) })
		c := one(t, f.run(t, opts), "serving-certificate")
		assert.Equal(t, doctor.Warn, c.Status)
		assert.Regexp(t, `expires \S+ \(in [23] days\)`, c.Message)
	})

	t.Run("a serving certificate the caBundle does not verify", func(t *testing.T) {
		other, err := certs.NewCA("someone-else", 24*time.Hour)
		require.NoError(t, err)
		servingSecret(t, f, other, 90*24*time.Hour)
		t.Cleanup(func() { servingSecret(t, f, ca, 90*24*time.Hour) })
		r := f.run(t, opts)
		c := one(t, r, "serving-certificate")
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Contains(t, c.Message, "the caBundle does not verify the serving certificate (Secret ha-system/ha-injector-tls) for ha-injector.ha-system.svc: x509:")
		// cert-manager's check compares the CA of the Secret with the caBundle.
		assert.Equal(t, doctor.Fail, one(t, r, "cert-manager").Status)
		assert.Contains(t, one(t, r, "cert-manager").Message, "is not in the webhook's caBundle")
	})

	t.Run("a Certificate that is not Ready", func(t *testing.T) {
		setCertificateReady(t, f, release+"-tls", cmmeta.ConditionFalse)
		t.Cleanup(func() { setCertificateReady(t, f, release+"-tls", cmmeta.ConditionTrue) })
		c := one(t, f.run(t, opts), "cert-manager")
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Contains(t, c.Message, "Certificate ha-system/ha-injector-tls is not Ready (Pending: waiting for the issuer)")
	})

	t.Run("no ready endpoint", func(t *testing.T) {
		setEndpoints(t, f, false)
		t.Cleanup(func() { setEndpoints(t, f, true) })
		c := one(t, f.run(t, opts), "webhook-pods")
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Contains(t, c.Message, "0 ready endpoints: the API server cannot reach the webhook")
	})
}

func installCertManagerCRDs(t *testing.T, f *fixture) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	require.NoError(t, err, "go list -m github.com/cert-manager/cert-manager")
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	_, err = envtest.InstallCRDs(f.cfg, envtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true})
	require.NoError(t, err)
}

// installChart creates every object the chart renders with its defaults (the HAPolicies
// exist already), with caBundle written as cainjector would and the namespaceSelector
// narrowed to no namespace. It returns the webhook configuration's name.
func installChart(t *testing.T, f *fixture, caBundle []byte) string {
	t.Helper()
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	r, err := chartrender.Render(chart, nil, chartrender.Options{ReleaseName: release, Namespace: releaseNamespace})
	require.NoError(t, err)
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}))
	name := ""
	for _, d := range r.Documents {
		obj := d.Object.DeepCopy()
		switch obj.GetKind() {
		case "HAPolicy":
			continue
		case "MutatingWebhookConfiguration":
			var mwc admissionregistrationv1.MutatingWebhookConfiguration
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &mwc))
			// The fixture's URL installation holds the chart's name already.
			mwc.Name = release + "-" + releaseNamespace
			for i := range mwc.Webhooks {
				mwc.Webhooks[i].ClientConfig.CABundle = caBundle
				sel := mwc.Webhooks[i].NamespaceSelector
				sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: "ha-injector.io/doctor-test-never", Operator: metav1.LabelSelectorOpExists})
			}
			require.NoError(t, f.c.Create(ctx, &mwc))
			name = mwc.Name
			continue
		}
		require.NoError(t, f.c.Create(ctx, obj), "%s %s", obj.GetKind(), obj.GetName())
	}
	require.NotEmpty(t, name)
	return name
}

// servingSecret writes the Secret cert-manager would: a certificate for the Service,
// signed by ca, valid for validFor.
func servingSecret(t *testing.T, f *fixture, ca *certs.CA, validFor time.Duration) {
	t.Helper()
	ctx := context.Background()
	kp, _, err := ca.Issue([]string{release + "." + releaseNamespace + ".svc"}, validFor)
	require.NoError(t, err)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: releaseNamespace, Name: release + "-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: kp.Cert, corev1.TLSPrivateKeyKey: kp.Key, "ca.crt": ca.PEM},
	}
	var existing corev1.Secret
	if err := f.c.Get(ctx, client.ObjectKeyFromObject(s), &existing); err == nil {
		existing.Data = s.Data
		require.NoError(t, f.c.Update(ctx, &existing))
		return
	}
	require.NoError(t, f.c.Create(ctx, s))
}

// markReady writes the statuses the controllers would: the Certificates and Issuers
// Ready, the Deployment's replicas available, two ready endpoints.
func markReady(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	setCertificateReady(t, f, release+"-tls", cmmeta.ConditionTrue)
	var issuers cmapi.IssuerList
	require.NoError(t, f.c.List(ctx, &issuers, client.InNamespace(releaseNamespace)))
	require.NotEmpty(t, issuers.Items)
	for i := range issuers.Items {
		is := &issuers.Items[i]
		is.Status.Conditions = []cmapi.IssuerCondition{{Type: cmapi.IssuerConditionReady, Status: cmmeta.ConditionTrue, Reason: "KeyPairVerified", LastTransitionTime: ptr.To(metav1.Now())}}
		require.NoError(t, f.c.Status().Update(ctx, is))
	}
	var dep appsv1.Deployment
	require.NoError(t, f.c.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: release}, &dep))
	dep.Status = appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, ObservedGeneration: dep.Generation}
	require.NoError(t, f.c.Status().Update(ctx, &dep))
	setEndpoints(t, f, true)
}

func setCertificateReady(t *testing.T, f *fixture, name string, status cmmeta.ConditionStatus) {
	t.Helper()
	ctx := context.Background()
	var cert cmapi.Certificate
	require.NoError(t, f.c.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: name}, &cert))
	cond := cmapi.CertificateCondition{Type: cmapi.CertificateConditionReady, Status: status, Reason: "Ready", Message: "Certificate is up to date and has not expired", LastTransitionTime: ptr.To(metav1.Now())}
	if status != cmmeta.ConditionTrue {
		cond.Reason, cond.Message = "Pending", "waiting for the issuer"
	}
	cert.Status.Conditions = []cmapi.CertificateCondition{cond}
	cert.Status.NotAfter = ptr.To(metav1.NewTime(time.Now().Add(90 * 24 * time.Hour)))
	require.NoError(t, f.c.Status().Update(ctx, &cert))
}

// setEndpoints writes the Service's EndpointSlice with two endpoints, ready or not.
func setEndpoints(t *testing.T, f *fixture, ready bool) {
	t.Helper()
	ctx := context.Background()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: releaseNamespace, Name: release + "-x1", Labels: map[string]string{discoveryv1.LabelServiceName: release}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}},
			{Addresses: []string{"10.0.0.12"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}},
		},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](9443)}},
	}
	var existing discoveryv1.EndpointSlice
	if err := f.c.Get(ctx, client.ObjectKeyFromObject(slice), &existing); err == nil {
		existing.Endpoints = slice.Endpoints
		require.NoError(t, f.c.Update(ctx, &existing))
		return
	}
	require.NoError(t, f.c.Create(ctx, slice))
}
