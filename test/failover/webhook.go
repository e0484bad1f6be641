package failover

import (
	"context"
	"fmt"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// StartWebhook installs the HAPolicy CRD, starts the webhook in this process on
// 127.0.0.1 with a certificate from the cluster's CA, installs what the chart renders
// with values (the MutatingWebhookConfiguration pointed at this process, and the
// HAPolicies), and waits until the API server calls it for a pod in probeNamespace (an
// opted-in namespace). Its log goes to ha-injector.log in the cluster's folder.
func StartWebhook(ctx context.Context, c *Cluster, root string, values map[string]any, probeNamespace string) (*localwebhook.Fixture, error) {
	if err := c.InstallCRDs(root); err != nil {
		return nil, err
	}
	return localwebhook.Serve(ctx, c.Config, localwebhook.Options{
		Values:         values,
		CA:             c.CA,
		Dir:            filepath.Join(c.Dir, "webhook-certs"),
		LogFile:        filepath.Join(c.Dir, "ha-injector.log"),
		ProbeNamespace: probeNamespace,
	})
}

// InstallCRDs installs the chart's CRDs (the HAPolicy CRD) and waits until the API
// server serves them.
func (c *Cluster) InstallCRDs(root string) error {
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(root, chartrender.ChartDir, "crds")},
		ErrorIfPathMissing: true,
	}); err != nil {
		return fmt.Errorf("installing the HAPolicy CRD: %w", err)
	}
	return nil
}
