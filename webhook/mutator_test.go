package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jsonpatchv4 "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ha-injector/ha-injector/policies"
)

func readRequest(t testing.TB, file string) admission.Request {
	t.Helper()
	body, err := os.ReadFile(file)
	require.NoError(t, err)
	var review admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(body, &review))
	return admission.Request{AdmissionRequest: *review.Request}
}

// TestFallsBackToTheAPIServerOnCacheMiss: a namespace created a moment ago
// may not be in the informer cache yet; one uncached read finds it.
func TestFallsBackToTheAPIServerOnCacheMiss(t *testing.T) {
	emptyCache := fake.NewClientBuilder().WithScheme(Scheme).Build()
	api := fake.NewClientBuilder().WithScheme(Scheme).WithObjects(clusterState()...).Build()
	m := &Mutator{Kind: policies.KindPod, Cache: emptyCache, APIReader: api, SysctlImage: testSysctlImage}

	resp := m.Handle(context.Background(), readRequest(t, "testdata/pod-create.json"))
	assert.True(t, resp.Allowed)
	assert.NotEmpty(t, resp.Patch, "found through the API reader and mutated")

	m = &Mutator{Kind: policies.KindPod, Cache: emptyCache, APIReader: emptyCache, SysctlImage: testSysctlImage}
	resp = m.Handle(context.Background(), readRequest(t, "testdata/pod-create.json"))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], `namespace "team-a" could not be read (NotFound)`)
}

// panickingReader panics on every read, standing in for any bug on our side.
type panickingReader struct{ client.Reader }

func (panickingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	panic("boom")
}

func TestRecoversFromPanicsAndAdmitsUnchanged(t *testing.T) {
	before := testutil.ToFloat64(admissionsTotal.WithLabelValues("Pod", "", "error"))
	h := newReviewHandler(&Mutator{Kind: policies.KindPod, Cache: panickingReader{}}, "Pod", nil)
	body, err := os.ReadFile("testdata/pod-create.json")
	require.NoError(t, err)

	rec := post(h, body)
	assert.Equal(t, http.StatusOK, rec.Code)
	resp := decodeResponse(t, rec)
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Equal(t, []string{"ha-injector: internal error, admitted unchanged"}, resp.Warnings)
	assert.Equal(t, before+1, testutil.ToFloat64(admissionsTotal.WithLabelValues("Pod", "", "error")))
}

func TestMetricsCountOutcomesInjectionsAndFallbacks(t *testing.T) {
	handlers := newTestHandlers(t)
	mutated := admissionsTotal.WithLabelValues("Deployment", "strict", "mutated")
	injected := injectionsTotal.WithLabelValues("Deployment", "sysctls")
	downgrades := fallbacksTotal.WithLabelValues("Deployment", "downgrade")
	audits := admissionsTotal.WithLabelValues("Deployment", "audit", "audit")
	psa := fallbacksTotal.WithLabelValues("Pod", "pod-security")
	skipped := admissionsTotal.WithLabelValues("Pod", "default", "skipped")
	unchanged := admissionsTotal.WithLabelValues("Pod", "default", "unchanged")
	invalid := fallbacksTotal.WithLabelValues("Pod", "invalid-policy")
	invalidErrors := admissionsTotal.WithLabelValues("Pod", "broken", "error")
	image := fallbacksTotal.WithLabelValues("Pod", "image-not-allowed")
	podDowngrades := fallbacksTotal.WithLabelValues("Pod", "downgrade")
	counters := []prometheus.Collector{mutated, injected, downgrades, audits, psa, skipped, unchanged, invalid, invalidErrors, image, podDowngrades}
	before := make([]float64, len(counters))
	for i, c := range counters {
		before[i] = testutil.ToFloat64(c)
	}

	for file, kind := range map[string]policies.Kind{
		"testdata/deployment-required-downgraded.json": policies.KindDeployment,
		"testdata/deployment-audit.json":               policies.KindDeployment,
		"testdata/pod-psa-baseline.json":               policies.KindPod,
		"testdata/pod-daemonset.json":                  policies.KindPod,
		"testdata/pod-already-compliant.json":          policies.KindPod,
		"testdata/pod-invalid-policy.json":             policies.KindPod,
		"testdata/pod-image-not-allowed.json":          policies.KindPod,
		// Made by a controller, so no warning: still counted.
		"testdata/pod-required-job.json": policies.KindPod,
	} {
		body, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, post(handlers[kind], body).Code)
	}

	for i, c := range counters {
		assert.Equal(t, before[i]+1, testutil.ToFloat64(c), "counter %d", i)
	}
}

func TestMalformedHTTPRequests(t *testing.T) {
	h := newTestHandlers(t)[policies.KindPod]
	body, err := os.ReadFile("testdata/pod-create.json")
	require.NoError(t, err)

	cases := []struct {
		name        string
		method      string
		contentType string
		body        string
		code        int
		message     string
	}{
		{"GET is not allowed", http.MethodGet, "application/json", string(body), http.StatusMethodNotAllowed, "method GET not allowed"},
		{"the content type must be JSON", http.MethodPost, "text/plain", string(body), http.StatusUnsupportedMediaType, `content type "text/plain"`},
		{"charset is fine", http.MethodPost, "application/json; charset=utf-8", string(body), http.StatusOK, ""},
		{"an empty body", http.MethodPost, "application/json", "", http.StatusBadRequest, "not an AdmissionReview"},
		{"a body over the limit", http.MethodPost, "application/json", `{"a": "` + strings.Repeat("x", MaxRequestBytes) + `"}`, http.StatusRequestEntityTooLarge, "larger than"},
		{"another kind", http.MethodPost, "application/json", `{"apiVersion": "v1", "kind": "Pod"}`, http.StatusBadRequest, `got apiVersion "v1" kind "Pod"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(tc.method, tc.body)
			req.Header.Set("Content-Type", tc.contentType)
			rec := serve(h, req)
			assert.Equal(t, tc.code, rec.Code)
			if tc.code == http.StatusMethodNotAllowed {
				assert.Equal(t, http.MethodPost, rec.Header().Get("Allow"))
			}
			resp := decodeResponse(t, rec)
			if tc.code == http.StatusOK {
				assert.True(t, resp.Allowed)
				return
			}
			assert.False(t, resp.Allowed)
			require.NotNil(t, resp.Result)
			assert.Equal(t, int32(tc.code), resp.Result.Code)
			assert.Contains(t, resp.Result.Message, tc.message)
		})
	}
}

func TestWarningsStayWithinTheAPIServerLimits(t *testing.T) {
	var decisions []policies.Decision
	for i := 0; i < 100; i++ {
		decisions = append(decisions, policies.Decision{Feature: policies.FeatureSysctls, Action: policies.Applied, Reason: strings.Repeat("é", 300)})
	}
	warnings := warningsFor(decisions)
	total := 0
	for _, w := range warnings {
		n := len([]rune(w))
		assert.LessOrEqual(t, n, maxWarningRunes)
		total += n
	}
	assert.LessOrEqual(t, total, maxTotalWarningRunes)
	assert.Contains(t, warnings[len(warnings)-1], "more decisions in the ha-injector.io/status annotation")

	compliant := []policies.Decision{{Feature: policies.FeatureTolerations, Action: policies.Kept, Reason: "already 30s"}}
	assert.Empty(t, warningsFor(compliant), "a compliant object passes silently")
	skipped := []policies.Decision{{Feature: policies.FeatureWorkload, Action: policies.Skipped, Reason: "owned by DaemonSet"}}
	assert.Empty(t, warningsFor(skipped))
}

// TestDecodeKeepsCaseSensitiveFieldNames: "Spec" is not "spec" to the API server.
func TestDecode(t *testing.T) {
	m := &Mutator{Kind: policies.KindDeployment}
	obj, err := m.decode(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Object: runtime.RawExtension{Raw: []byte(`{"Spec": {"replicas": 5}}`)}}})
	require.NoError(t, err)
	assert.Nil(t, obj.Object.(*appsv1.Deployment).Spec.Replicas)
	_, err = m.decode(admission.Request{})
	assert.ErrorContains(t, err, "carries no object")
}

// TestPatchKeepsFieldsUnknownToThisBuild sends a Pod carrying fields our
// k8s.io/api lacks, as a newer cluster would, and applies the answer as the
// API server does: every unknown field is still there.
func TestPatchKeepsFieldsUnknownToThisBuild(t *testing.T) {
	h := newTestHandlers(t)[policies.KindPod]
	body, err := os.ReadFile("testdata/pod-unknown-fields.json")
	require.NoError(t, err)
	resp := decodeResponse(t, post(h, body))
	require.NotEmpty(t, resp.Patch)

	var ops []map[string]any
	require.NoError(t, json.Unmarshal(resp.Patch, &ops))
	for _, op := range ops {
		assert.NotEqual(t, "remove", op["op"], "the patch removes %v", op["path"])
	}
	req := readRequest(t, "testdata/pod-unknown-fields.json")
	patch, err := jsonpatchv4.DecodePatch(resp.Patch)
	require.NoError(t, err)
	patched, err := patch.Apply(req.Object.Raw)
	require.NoError(t, err)

	var pod struct {
		Spec struct {
			FuturePodField map[string]any   `json:"futurePodField"`
			Containers     []map[string]any `json:"containers"`
			InitContainers []map[string]any `json:"initContainers"`
		} `json:"spec"`
	}
	require.NoError(t, json.Unmarshal(patched, &pod))
	assert.Equal(t, map[string]any{"mode": "fast"}, pod.Spec.FuturePodField)
	assert.Equal(t, true, pod.Spec.Containers[0]["futureContainerField"])
	require.Len(t, pod.Spec.InitContainers, 2)
	assert.Equal(t, policies.SysctlContainerName, pod.Spec.InitContainers[0]["name"])
	assert.Equal(t, "keep", pod.Spec.InitContainers[1]["futureInitField"])
}
