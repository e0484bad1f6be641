package preview

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAURLBodyOverTheBoundIsAnError: a manifest fetched from a URL that is longer than
// the bound is refused, not read cut short.
func TestAURLBodyOverTheBoundIsAnError(t *testing.T) {
	const pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: u}\nspec: {containers: [{name: a, image: a}]}\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(pod)) }))
	defer srv.Close()

	docs, err := readSource(srv.URL+"/u.yaml", nil)
	require.NoError(t, err)
	require.Len(t, docs, 1)

	saved := maxURLBytes
	defer func() { maxURLBytes = saved }()
	maxURLBytes = len(pod) - 1
	_, err = readSource(srv.URL+"/u.yaml", nil)
	assert.ErrorContains(t, err, "u.yaml: more than")
}
