package proc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStopEndsTheProcessAndItsChildren(t *testing.T) {
	dir := t.TempDir()
	// A shell that starts a child: the whole group goes on Stop.
	p, err := Start("sleeper", filepath.Join(dir, "log"), "/bin/sh", nil, "-c", "sleep 60 & sleep 60")
	require.NoError(t, err)
	require.NoError(t, p.Alive())
	require.NoError(t, p.Stop(5*time.Second))
	done, err := p.Exited()
	assert.True(t, done)
	assert.Error(t, err, "killed by SIGTERM, not a clean exit")
	assert.ErrorContains(t, p.Alive(), "sleeper exited")
}

func TestWaitHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	require.NoError(t, WaitHTTP(context.Background(), nil, srv.URL, 5*time.Second, nil))
	assert.Equal(t, int32(3), calls.Load(), "polled until 200")

	err := WaitHTTP(context.Background(), nil, srv.URL, 5*time.Second, func() error { return errors.New("gone") })
	assert.EqualError(t, err, "gone", "a dead process ends the wait at once")

	calls.Store(-1000)
	err = WaitHTTP(context.Background(), nil, srv.URL, 300*time.Millisecond, nil)
	assert.ErrorContains(t, err, "503 Service Unavailable", "the last answer is named")
}
