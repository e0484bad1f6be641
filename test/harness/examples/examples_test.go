package examples

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

func TestWebServerIsTheSeedsThreeReplicaDeployment(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	d, err := WebServer(root)
	require.NoError(t, err)
	assert.Equal(t, "web-server", d.Name)
	require.NotNil(t, d.Spec.Replicas)
	assert.Equal(t, int32(3), *d.Spec.Replicas)

	_, err = WebServer(t.TempDir())
	assert.Error(t, err, "no examples folder")
}
