package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies"
)

// baselineHandler is the floor any webhook pays: decode the AdmissionReview,
// answer "allowed" without looking at the object, encode the answer.
var baselineHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeReview(w, http.StatusOK, admissionv1.AdmissionReview{Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}})
})

func baselineNsPerOp(b *testing.B, body []byte, n int) float64 {
	start := time.Now()
	for range n {
		req := httptest.NewRequest(http.MethodPost, PodPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		baselineHandler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("baseline: HTTP %d", rec.Code)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func benchmarkHandler(b *testing.B, h http.Handler, body []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	defer func() {
		runtime.ReadMemStats(&after)
		// Everything allocated while answering, an upper bound on how much
		// the heap grows for one request.
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(len(body)), "alloc/body")
	}()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, PodPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkAdmission measures a Pod and a Deployment CREATE, a 1 MiB Pod and
// a re-applied Deployment UPDATE through the full handler (decode, cache
// lookups, engine, patch, encode) next to the decode/encode baseline, and
// reports each as a multiple of the baseline measured in the same run
// ("x-baseline").
//
//	go test ./webhook -run '^$' -bench Admission -benchmem
func BenchmarkAdmission(b *testing.B) {
	handlers := newTestHandlers(b)
	const podFile = "testdata/pod-create-default-toleration-seconds.json"
	cases := []struct {
		name string
		file string
		obj  any
		edit func(any)
		h    http.Handler
		// reapplied: the UPDATE of the object's manifest re-applied over
		// the object as h injected it, instead of its CREATE.
		reapplied bool
	}{
		{"pod", podFile, &corev1.Pod{}, nil, handlers[policies.KindPod], false},
		{"deployment", "testdata/deployment-create.json", &appsv1.Deployment{}, nil, handlers[policies.KindDeployment], false},
		{"large-pod", podFile, &corev1.Pod{}, withEnvVars(1000), handlers[policies.KindPod], false},
		{"deployment-update", "testdata/deployment-create.json", &appsv1.Deployment{}, nil, handlers[policies.KindDeployment], true},
	}
	for _, c := range cases {
		body := canonicalReview(b, c.file, c.obj, c.edit)
		if c.reapplied {
			body = reappliedUpdate(b, c.h, body)
		}
		b.Run(c.name+"/baseline", func(b *testing.B) { benchmarkHandler(b, baselineHandler, body) })
		b.Run(c.name+"/ha-injector", func(b *testing.B) {
			benchmarkHandler(b, c.h, body)
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			// The baseline again, timed right after on the same input, so the
			// ratio compares like with like within one run.
			b.ReportMetric(perOp/baselineNsPerOp(b, body, max(b.N, min(1000, (256<<20)/len(body)))), "x-baseline")
		})
	}
}

// canonicalReview reads an AdmissionReview, decodes its object into obj,
// changes it with edit (if any) and re-encodes it the way the API server does
// (the encoding of the typed object), so the benchmark takes the path real
// requests take.
func canonicalReview(b *testing.B, path string, obj any, edit func(any)) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &review); err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(review.Request.Object.Raw, obj); err != nil {
		b.Fatal(err)
	}
	if edit != nil {
		edit(obj)
	}
	if review.Request.Object.Raw, err = json.Marshal(obj); err != nil {
		b.Fatal(err)
	}
	out, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// reappliedUpdate turns the CREATE review create into the UPDATE a GitOps
// tool sends when it applies the same manifest again: the old object is the
// Deployment as h injected it, the new one the manifest.
func reappliedUpdate(b *testing.B, h http.Handler, create []byte) []byte {
	rec := post(h, create)
	var answer, review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil || len(answer.Response.Patch) == 0 {
		b.Fatalf("the CREATE was not injected (%v): %s", err, rec.Body.String())
	}
	if err := json.Unmarshal(create, &review); err != nil {
		b.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(answer.Response.Patch)
	if err != nil {
		b.Fatal(err)
	}
	if review.Request.OldObject.Raw, err = p.Apply(review.Request.Object.Raw); err != nil {
		b.Fatal(err)
	}
	review.Request.Operation = admissionv1.Update
	out, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	var update admissionv1.AdmissionReview
	if err := json.Unmarshal(post(h, out).Body.Bytes(), &update); err != nil || update.Response == nil || len(update.Response.Patch) == 0 {
		b.Fatalf("the UPDATE does not put the injection back (%v)", err)
	}
	return out
}

// withEnvVars adds n environment variables of about 1 KiB each to a Pod's
// first container.
func withEnvVars(n int) func(any) {
	return func(obj any) {
		c := &obj.(*corev1.Pod).Spec.Containers[0]
		for i := range n {
			c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%04d", i), Value: strings.Repeat("v", 1000)})
		}
	}
}
