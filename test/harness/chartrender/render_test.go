package chartrender

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

func TestSplitKeepsSourcesAndSkipsEmptyDocuments(t *testing.T) {
	docs, err := Split("---\n# Source: a/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n")
	require.NoError(t, err)
	require.Len(t, docs, 2)
	assert.Equal(t, "a/templates/x.yaml", docs[0].Source)
	assert.Equal(t, "ConfigMap", docs[0].Object.GetKind())
	assert.Equal(t, "s", docs[1].Object.GetName())

	_, err = Split("---\n# Source: a/templates/bad.yaml\nkind: [\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a/templates/bad.yaml", "the error names the template")
}

func TestLocalWebhookConfigurationPointsEveryWebhookAtTheURL(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	chart, err := Load(root)
	require.NoError(t, err)
	r, err := Render(chart, nil, Options{})
	require.NoError(t, err)
	cfg, err := r.LocalWebhookConfiguration("https://127.0.0.1:9443", []byte("CA"))
	require.NoError(t, err)
	require.Len(t, cfg.Webhooks, 3)
	for _, h := range cfg.Webhooks {
		assert.Nil(t, h.ClientConfig.Service)
		require.NotNil(t, h.ClientConfig.URL)
		assert.Regexp(t, `^https://127\.0\.0\.1:9443/mutate-`, *h.ClientConfig.URL)
		assert.Equal(t, []byte("CA"), h.ClientConfig.CABundle)
		assert.NotNil(t, h.NamespaceSelector, "everything else is the chart's")
	}

	empty := &Result{}
	_, err = empty.LocalWebhookConfiguration("https://127.0.0.1:9443", nil)
	assert.ErrorContains(t, err, "0 MutatingWebhookConfigurations")
}
