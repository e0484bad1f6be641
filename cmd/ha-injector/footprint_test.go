package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBinaryLinksNoServerStacks keeps out of the binary the libraries that cost serve
// memory for nothing it uses. Every package linked runs its init and maps its code:
// controller-runtime's metrics authentication filter alone brought k8s.io/apiserver's
// authentication stack (CEL, gRPC, OpenTelemetry), 41 MB of binary and 19 MiB of
// resident memory at start, under a 128 MiB memory limit (webhook/metricsauth.go does
// its two API calls instead). Helm renders the chart in tests only.
func TestBinaryLinksNoServerStacks(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	forbidden := []string{"k8s.io/apiserver/", "github.com/google/cel-go/", "google.golang.org/grpc", "go.opentelemetry.io/otel/sdk", "helm.sh/helm/"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			assert.False(t, strings.HasPrefix(pkg, f), "ha-injector links %s", pkg)
		}
	}
}
