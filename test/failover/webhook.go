package failover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ha-injector/ha-injector/internal/chartrender"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook"
)

// Webhook is `ha-injector serve` running in this process as the cluster's webhook.
type Webhook struct {
	cancel context.CancelFunc
	done   chan error
}

// StartWebhook installs the HAPolicy CRD, starts the webhook on 127.0.0.1 with a
// certificate from the cluster's CA, installs what the chart renders with values (the
// MutatingWebhookConfiguration pointed at this process, and the HAPolicies), and waits
// until the API server calls it for a pod in probeNamespace (an opted-in namespace).
func StartWebhook(ctx context.Context, c *Cluster, root string, values map[string]any, probeNamespace string) (_ *Webhook, err error) {
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
	logFile, err := os.Create(filepath.Join(c.Dir, "ha-injector.log"))
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile), zap.Level(zapcore.InfoLevel)))
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	cfg := webhook.DefaultConfig()
	cfg.RestConfig = c.Config
	cfg.CertPath = certDir
	cfg.WebhookHost = "127.0.0.1"
	cfg.WebhookPort = ports[0]
	cfg.HealthProbeBindAddress = fmt.Sprintf("127.0.0.1:%d", ports[1])
	cfg.MetricsBindAddress = "0"
	serveCtx, cancel := context.WithCancel(context.Background())
	w := &Webhook{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := webhook.Run(serveCtx, cfg)
		logFile.Close()
		w.done <- err
	}()
	defer func() {
		if err != nil {
			_ = w.Stop()
		}
	}()
	served := func() error {
		select {
		case err := <-w.done:
			w.done <- err // for Stop
			return fmt.Errorf("stopped: %v", err)
		default:
			return nil
		}
	}
	if err := waitHTTP(ctx, "http://"+cfg.HealthProbeBindAddress+"/readyz", nil, 30*time.Second, served); err != nil {
		return nil, fmt.Errorf("ha-injector serve: %w", err)
	}

	cl, err := client.New(c.Config, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, err
	}
	chart, err := chartrender.Load(root)
	if err != nil {
		return nil, err
	}
	rendered, err := chartrender.Render(chart, values, chartrender.Options{})
	if err != nil {
		return nil, err
	}
	hooks, err := rendered.LocalWebhookConfiguration(fmt.Sprintf("https://127.0.0.1:%d", cfg.WebhookPort), c.CA.PEM)
	if err != nil {
		return nil, err
	}
	objs := []client.Object{hooks}
	for _, p := range rendered.Find("HAPolicy") {
		objs = append(objs, p)
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}
	// The API server picks up a new webhook configuration asynchronously.
	i := 0
	err = poll(ctx, 30*time.Second, "the webhook configuration to take effect", func() (bool, error) {
		i++
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: probeNamespace, Name: fmt.Sprintf("probe-%d", i)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if err := cl.Create(ctx, probe, client.DryRunAll); err != nil {
			return false, err
		}
		return probe.Annotations[policies.StatusAnnotation] != "", nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Stop stops the webhook and waits (bounded) for it.
func (w *Webhook) Stop() error {
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("ha-injector serve: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("ha-injector serve did not stop within 30s")
	}
}
