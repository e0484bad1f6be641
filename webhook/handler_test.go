package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/golden"
)

// clusterState is what the handler tests' fake cluster holds: namespaces
// opted in to a default, an audit and a strict policy, one enforcing Pod
// Security baseline, one naming a policy that does not exist, one naming an
// invalid policy, one naming a policy with an image the installation does not
// allow, one not opted in, two worker nodes plus a control-plane node,
// ReplicaSets as the Deployment controller leaves them (3 replicas; opted
// out; 1 replica) and a StatefulSet of 2 replicas.
func clusterState() []client.Object {
	ns := func(name string, labels map[string]string) client.Object {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	node := func(name string, labels map[string]string) client.Object {
		labels["kubernetes.io/hostname"] = name
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	replicaSet := func(name string, annotations map[string]string) client.Object {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, Annotations: annotations}}
	}
	policy := func(name string, spec v1alpha1.HAPolicySpec) client.Object {
		// A UID, as the API server gives every stored object.
		return &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}, Spec: spec}
	}
	return []client.Object{
		ns("team-a", map[string]string{policies.PolicyLabel: "default"}),
		ns("team-audit", map[string]string{policies.PolicyLabel: "audit"}),
		ns("team-strict", map[string]string{policies.PolicyLabel: "strict"}),
		ns("team-baseline", map[string]string{policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "baseline"}),
		ns("team-unknown-policy", map[string]string{policies.PolicyLabel: "does-not-exist"}),
		ns("not-opted-in", map[string]string{}),
		ns("team-invalid-policy", map[string]string{policies.PolicyLabel: "broken"}),
		ns("team-other-image", map[string]string{policies.PolicyLabel: "other-image"}),
		node("worker-1", map[string]string{}),
		node("worker-2", map[string]string{}),
		node("control-plane-1", map[string]string{facts.ControlPlaneLabel: ""}),
		replicaSet("web-7d4b9c8f5", map[string]string{policies.DesiredReplicasAnnotation: "3"}),
		replicaSet("quiet-5f6d7c8b9", map[string]string{policies.DesiredReplicasAnnotation: "3", policies.InjectAnnotation: "false"}),
		replicaSet("single-6d5c4b3a2", map[string]string{policies.DesiredReplicasAnnotation: "1"}),
		policy("default", v1alpha1.HAPolicySpec{}),
		policy("audit", v1alpha1.HAPolicySpec{Mode: v1alpha1.ModeAudit}),
		policy("strict", v1alpha1.HAPolicySpec{AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired}}),
		// Stored under a CRD without the namespaced-sysctl rule: a route to
		// root on every node if it were applied.
		policy("broken", v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{
			Method: v1alpha1.SysctlInitContainer, Image: "busybox:1.36",
			Values: map[string]v1alpha1.SysctlValue{"kernel.modprobe": "/tmp/x", "vm.overcommit_memory": "1"},
		}}),
		policy("other-image", v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{Image: "busybox:1.36"}}),
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team-strict", Name: "db"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2)}},
	}
}

func newTestHandlers(t testing.TB) map[policies.Kind]http.Handler {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(Scheme).WithObjects(clusterState()...).Build()
	return map[policies.Kind]http.Handler{
		policies.KindPod:        newReviewHandler(&Mutator{Kind: policies.KindPod, Cache: c, APIReader: c, SysctlImage: testSysctlImage}, "Pod", nil),
		policies.KindDeployment: newReviewHandler(&Mutator{Kind: policies.KindDeployment, Cache: c, APIReader: c, SysctlImage: testSysctlImage}, "Deployment", nil),
	}
}

func newRequest(method, body string) *http.Request {
	req := httptest.NewRequest(method, PodPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func post(h http.Handler, body []byte) *httptest.ResponseRecorder {
	return serve(h, newRequest(http.MethodPost, string(body)))
}

// decodeResponse checks that an HTTP response is a well-formed AdmissionReview.
func decodeResponse(t testing.TB, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var review admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &review), rec.Body.String())
	require.Equal(t, "admission.k8s.io/v1", review.APIVersion)
	require.Equal(t, "AdmissionReview", review.Kind)
	require.NotNil(t, review.Response)
	return review.Response
}

// TestHandlerGolden sends every testdata/<case>.json AdmissionReview to the
// handler for its kind, applies the returned patch to the request's object as
// the API server does, and compares status, warnings and resulting object with
// testdata/<case>.golden.yaml.
func TestHandlerGolden(t *testing.T) {
	handlers := newTestHandlers(t)
	for _, in := range golden.Inputs(t, "testdata", ".json", ".golden.yaml") {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(in)
			require.NoError(t, err)
			kind := policies.KindPod
			if strings.HasPrefix(name, "deployment-") {
				kind = policies.KindDeployment
			}
			rec := post(handlers[kind], body)
			resp := decodeResponse(t, rec)

			var out bytes.Buffer
			fmt.Fprintf(&out, "# HTTP %d\n# allowed: %v\n", rec.Code, resp.Allowed)
			if resp.Result != nil && resp.Result.Message != "" {
				fmt.Fprintf(&out, "# result: %d %s\n", resp.Result.Code, resp.Result.Message)
			}
			for _, w := range resp.Warnings {
				fmt.Fprintf(&out, "# warning: %s\n", w)
			}

			if rec.Code != http.StatusOK {
				assert.False(t, resp.Allowed)
				golden.Check(t, filepath.Join("testdata", name+".golden.yaml"), out.Bytes())
				return
			}
			var review admissionv1.AdmissionReview
			require.NoError(t, json.Unmarshal(body, &review))
			assert.Equal(t, review.Request.UID, resp.UID, "the response answers the request's uid")
			assert.True(t, resp.Allowed, "ha-injector never denies")

			if len(resp.Patch) == 0 {
				assert.Nil(t, resp.PatchType)
				out.WriteString("# no patch: the object is admitted unchanged\n")
			} else {
				require.NotNil(t, resp.PatchType)
				assert.Equal(t, admissionv1.PatchTypeJSONPatch, *resp.PatchType)
				patch, err := jsonpatch.DecodePatch(resp.Patch)
				require.NoError(t, err)
				// Applied without creating missing parents, as the API server does.
				patched, err := patch.Apply(review.Request.Object.Raw)
				require.NoError(t, err)
				docs, err := manifest.Read(name, bytes.NewReader(patched))
				require.NoError(t, err)
				require.NoError(t, manifest.Write(&out, manifest.YAML, docs, [][]byte{patched}))
			}
			golden.Check(t, filepath.Join("testdata", name+".golden.yaml"), out.Bytes())
		})
	}
}

// testSysctlImage stands for serve's --sysctl-image.
const testSysctlImage = "registry.example/ha-injector:v1.0.0"

// TestAnswersCarryTheirLength: an answer with a patch, larger than net/http
// buffers before it starts chunking, is sent whole with its Content-Length.
func TestAnswersCarryTheirLength(t *testing.T) {
	srv := httptest.NewServer(newTestHandlers(t)[policies.KindPod])
	defer srv.Close()
	body, err := os.ReadFile("testdata/pod-create.json")
	require.NoError(t, err)
	resp, err := srv.Client().Post(srv.URL, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Greater(t, len(answer), 2048, "an answer that net/http would chunk")
	assert.Empty(t, resp.TransferEncoding)
	assert.Equal(t, int64(len(answer)), resp.ContentLength)
}
