package webhook

import (
	"github.com/go-logr/logr"
)

// DeferValues returns a logger that adds names and key-values to base only when a
// line is written. zap encodes the fields of WithValues at once, and every admission
// names itself twice (controller-runtime's admission.Webhook: object, resource, user,
// request ID; the Mutator: kind, namespace, name, policy), while at the default level
// almost no admission writes a line: those two calls were 6% of serve's CPU under
// load. A line that is written applies them then (each line again), so values are
// formatted when the line is written: pass values that do not change afterwards.
func DeferValues(base logr.Logger) logr.Logger {
	sink := base.GetSink()
	if sink == nil {
		return base
	}
	d := &deferredSink{sink: sink}
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		// A copy of base's sink, already initialised for logr.Logger's frame, that
		// also skips this sink's: logr.New's Init must then not reach it (zapr's Init
		// would skip one frame more, and change base's sink in place).
		d.sink, d.initialised = cd.WithCallDepth(1), true
	}
	return logr.New(d)
}

// deferredSink holds what WithName and WithValues were given, in order, and
// applies it to sink when a line is enabled.
type deferredSink struct {
	sink logr.LogSink
	// initialised: sink accounts for the callers' frames already.
	initialised bool
	// ops are names (string) and key-value lists ([]any) in the order given.
	ops []any
}

var (
	_ logr.LogSink          = &deferredSink{}
	_ logr.CallDepthLogSink = &deferredSink{}
)

func (d *deferredSink) Init(info logr.RuntimeInfo) {
	if !d.initialised {
		info.CallDepth++ // this sink's frame
		d.sink.Init(info)
	}
}

func (d *deferredSink) Enabled(level int) bool { return d.sink.Enabled(level) }

func (d *deferredSink) Info(level int, msg string, kv ...any) {
	d.applied().Info(level, msg, kv...)
}

func (d *deferredSink) Error(err error, msg string, kv ...any) {
	d.applied().Error(err, msg, kv...)
}

func (d *deferredSink) WithValues(kv ...any) logr.LogSink {
	return d.with(kv)
}

func (d *deferredSink) WithName(name string) logr.LogSink {
	return d.with(name)
}

func (d *deferredSink) WithCallDepth(depth int) logr.LogSink {
	cd, ok := d.sink.(logr.CallDepthLogSink)
	if !ok {
		return d
	}
	return &deferredSink{sink: cd.WithCallDepth(depth), initialised: d.initialised, ops: d.ops}
}

func (d *deferredSink) with(op any) *deferredSink {
	ops := make([]any, len(d.ops), len(d.ops)+1)
	copy(ops, d.ops)
	return &deferredSink{sink: d.sink, initialised: d.initialised, ops: append(ops, op)}
}

// applied is sink with the names and values given so far.
func (d *deferredSink) applied() logr.LogSink {
	s := d.sink
	for _, op := range d.ops {
		switch o := op.(type) {
		case string:
			s = s.WithName(o)
		case []any:
			s = s.WithValues(o...)
		}
	}
	return s
}
