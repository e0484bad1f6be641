package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// countingSink counts the WithValues calls that reach it.
type countingSink struct {
	logr.LogSink
	withValues *int
}

func (c countingSink) WithValues(kv ...any) logr.LogSink {
	*c.withValues++
	return countingSink{LogSink: c.LogSink.WithValues(kv...), withValues: c.withValues}
}

func TestDeferValuesWritesTheSameLines(t *testing.T) {
	var direct, deferred bytes.Buffer
	newZap := func(w *bytes.Buffer) logr.Logger {
		return zap.New(zap.WriteTo(w), zap.Level(zapcore.InfoLevel), zap.StacktraceLevel(zapcore.PanicLevel), zap.RawZapOpts(uberzap.AddCaller()),
			zap.JSONEncoder(func(c *zapcore.EncoderConfig) { c.TimeKey = "" }))
	}
	use := func(l logr.Logger) {
		l = l.WithName("webhook").WithValues("kind", "Pod", "namespace", "team-a")
		l.V(1).Info("not written")
		l = l.WithName("mutator").WithValues("name", "web-1")
		l.Info("decisions", "outcome", "mutated")
		l.Error(errors.New("boom"), "reading the namespace")
	}
	use(newZap(&direct))
	base := newZap(&deferred)
	use(DeferValues(base))
	require.NotEmpty(t, direct.String())
	assert.Equal(t, direct.String(), deferred.String(), "the same lines, names, values and caller")

	// The caller is this file, not lazylog.go.
	var line map[string]any
	require.NoError(t, json.Unmarshal(bytes.SplitN(deferred.Bytes(), []byte("\n"), 2)[0], &line))
	assert.Contains(t, line["caller"], "lazylog_test.go")

	// base is left as it was.
	deferred.Reset()
	base.Info("base")
	require.NoError(t, json.Unmarshal(deferred.Bytes(), &line))
	assert.Contains(t, line["caller"], "lazylog_test.go", "base's caller is still right")
}

func TestDeferValuesCallsNothingForALineNotWritten(t *testing.T) {
	n := 0
	base := logr.New(countingSink{LogSink: zap.New(zap.WriteTo(&bytes.Buffer{}), zap.Level(zapcore.InfoLevel)).GetSink(), withValues: &n})
	l := DeferValues(base).WithValues("object", "team-a/web-1", "user", "alice").WithValues("kind", "Pod")
	l.V(1).Info("decisions")
	assert.Zero(t, n, "no line, no WithValues on the sink")
	l.Info("mutated")
	assert.Equal(t, 2, n, "a written line applies the values then")
	assert.Equal(t, logr.Discard(), DeferValues(logr.Discard()))
}
