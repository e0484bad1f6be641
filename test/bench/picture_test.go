package bench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/test/harness/svg"
)

// svgText is the text of the picture's <text> elements, one a line; the picture must be
// a well-formed SVG.
func svgText(t *testing.T, picture []byte) string {
	t.Helper()
	texts, err := svg.Texts(picture)
	require.NoError(t, err)
	return strings.Join(texts, "\n")
}

func TestRatiosPictureHasABarPerRowWithARatio(t *testing.T) {
	// Rows made up for the test, built as Run builds them.
	rows := []Row{
		atLeast(row("admission over TLS, 8 clients", "throughput", "req/s", 900, ptr.To(1000.0)), 0.8),
		atMost(row("admission over TLS, 8 clients", "p99 latency", "ms", 3.3, ptr.To(1.1)), 2),
		row("kube-apiserver creating pods", "pods/s", "pods/s", 150, ptr.To(200.0)),
		row("serve, idle", "RSS", "MiB", 40, ptr.To(20.0)).target("<= 96", true),
		row("resilience, certificate rotated mid-run", "failed requests", "count", 0, nil).target("0", true),
	}
	require.Equal(t, 2.0, *rows[1].RatioTarget, "atMost records its bound")
	require.Nil(t, rows[3].RatioTarget, "a target on ours is not one on the ratio")
	svg, err := RatiosPicture(rows)
	require.NoError(t, err)
	text := svgText(t, svg)
	for _, want := range []string{
		"admission over TLS, 8 clients", "throughput", "p99 latency", "kube-apiserver creating pods", "serve, idle", "RSS",
		"0.90× (target >= 0.8)", "3.00× (target <= 2)", "0.75×", "2.00× (ours 40 MiB, target <= 96)",
	} {
		assert.Contains(t, text, want)
	}
	assert.NotContains(t, text, "resilience", "a row without a baseline has no ratio to draw")

	_, err = RatiosPicture(rows[4:])
	assert.ErrorContains(t, err, "no row has a ratio")
}
