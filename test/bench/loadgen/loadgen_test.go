package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/types"
)

func review(uid string) []byte {
	b, _ := json.Marshal(admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{UID: types.UID(uid)}})
	return b
}

// server answers like a webhook; answer chooses the UID it answers with.
func server(t *testing.T, status int, answer func(types.UID) types.UID) (*httptest.Server, []byte, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var in admissionv1.AdmissionReview
		require.NoError(t, json.NewDecoder(r.Body).Decode(&in))
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(admissionv1.AdmissionReview{Response: &admissionv1.AdmissionResponse{UID: answer(in.Request.UID), Allowed: true}})
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, ca, &calls
}

func same(uid types.UID) types.UID { return uid }

func TestRunCountsEveryRequest(t *testing.T) {
	srv, ca, calls := server(t, http.StatusOK, same)
	res, err := Run(context.Background(), Config{
		BaseURL: srv.URL, CA: ca, Concurrency: 4, Requests: 200,
		Mix: []Request{{Path: "/a", Body: review("1")}, {Path: "/b", Body: review("2")}},
	})
	require.NoError(t, err)
	assert.Equal(t, 200, res.Sent)
	assert.Zero(t, res.Errors, "%v", res.FirstErr)
	assert.Equal(t, int32(200), calls.Load())
	assert.Positive(t, res.Throughput())
	assert.LessOrEqual(t, res.Percentile(50), res.Percentile(99))
	assert.LessOrEqual(t, res.Percentile(99), res.Percentile(99.9))
	assert.Positive(t, res.Percentile(50))
}

func TestRunKeepsAFixedRate(t *testing.T) {
	srv, ca, _ := server(t, http.StatusOK, same)
	res, err := Run(context.Background(), Config{
		BaseURL: srv.URL, CA: ca, Concurrency: 2, Duration: time.Second, Rate: 100,
		Mix: []Request{{Path: "/", Body: review("1")}},
	})
	require.NoError(t, err)
	assert.InDelta(t, 100, res.Sent, 10, "about rate x duration requests")
	assert.Zero(t, res.Errors)
}

func TestRunCountsErrors(t *testing.T) {
	for name, srv := range map[string]func() (*httptest.Server, []byte, *atomic.Int32){
		"an HTTP error": func() (*httptest.Server, []byte, *atomic.Int32) {
			return server(t, http.StatusInternalServerError, same)
		},
		"an answer for another": func() (*httptest.Server, []byte, *atomic.Int32) {
			return server(t, http.StatusOK, func(types.UID) types.UID { return "x" })
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, ca, _ := srv()
			res, err := Run(context.Background(), Config{BaseURL: s.URL, CA: ca, Concurrency: 2, Requests: 10, Mix: []Request{{Path: "/", Body: review("1")}}})
			require.NoError(t, err)
			assert.Equal(t, 10, res.Errors)
			assert.Error(t, res.FirstErr)
			assert.Zero(t, res.Throughput())
		})
	}
}

func TestRunRejectsAnIncompleteConfig(t *testing.T) {
	_, err := Run(context.Background(), Config{Concurrency: 1, Requests: 1})
	assert.Error(t, err)
	_, err = Run(context.Background(), Config{Concurrency: 1, Requests: 1, Mix: []Request{{Body: []byte("{}")}}, CA: []byte("x")})
	assert.Error(t, err)
}
