package webhook

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// drain is the shutdown sequence of a replica that is being replaced or scaled in. On
// SIGTERM the webhook keeps serving for ShutdownDelay with /readyz failing, so the
// Service's endpoints drop the pod and new connections go to other replicas, and every
// answer carries "Connection: close", so the API server's keep-alive connections to this
// pod end cleanly after a response instead of being cut while idle (a request sent on a
// connection the server is closing fails, and the API server does not retry it). Only
// then does the server stop accepting and let in-flight requests finish.
type drain struct {
	draining atomic.Bool
}

// closeWhileDraining wraps the admission handlers.
func (d *drain) closeWhileDraining(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// readyz fails while draining.
func (d *drain) readyz(*http.Request) error {
	if d.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// delayed returns a context cancelled ShutdownDelay after parent, and marks the
// replica as draining in between. stop releases it early.
func (d *drain) delayed(parent context.Context, delay time.Duration, log logr.Logger) (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = context.WithCancel(context.WithoutCancel(parent))
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-parent.Done():
		}
		d.draining.Store(true)
		if delay > 0 {
			log.Info("shutting down: draining before the server stops", "shutdownDelay", delay)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
		stop()
	}()
	return ctx, stop
}
