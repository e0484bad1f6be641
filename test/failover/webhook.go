package failover

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/webhook"
)

// StartWebhook installs the HAPolicy CRD, starts the webhook in this process on
// 127.0.0.1 with a certificate from the cluster's CA, installs what the chart renders
// with values (the MutatingWebhookConfiguration pointed at this process, and the
// HAPolicies), and waits until the API server calls it for a pod in probeNamespace (an
// opted-in namespace). Its log goes to ha-injector.log in the cluster's folder.
func StartWebhook(ctx context.Context, c *Cluster, root string, values map[string]any, probeNamespace string) (_ *localwebhook.Server, err error) {
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(root, chartrender.ChartDir, "crds")},
		ErrorIfPathMissing: true,
	}); err != nil {
		return nil, fmt.Errorf("installing the HAPolicy CRD: %w", err)
	}

	kp, _, err := c.CA.Issue([]string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(c.Dir, "webhook-certs")
	if err := kp.WriteFiles(certDir, "tls.crt", "tls.key"); err != nil {
		return nil, err
	}
	// The file stays open as long as this process logs to it.
	if _, err := localwebhook.LogTo(filepath.Join(c.Dir, "ha-injector.log")); err != nil {
		return nil, err
	}
	server, err := localwebhook.Start(c.Config, certDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = server.Stop()
		}
	}()

	cl, err := client.New(c.Config, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, err
	}
	if err := localwebhook.Install(ctx, cl, root, values, server.URL(), c.CA.PEM, true); err != nil {
		return nil, err
	}
	if err := localwebhook.WaitEffective(ctx, cl, probeNamespace, 30*time.Second); err != nil {
		return nil, err
	}
	return server, nil
}
