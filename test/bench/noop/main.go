// Command noop is the baseline of the admission benchmarks: the same controller-runtime
// webhook server as `ha-injector serve` (same TLS settings, HTTP/1.1 only, same paths),
// whose handler only decodes the AdmissionReview and answers "allowed". What it costs is
// the floor any webhook pays; ha-injector is measured against it in the same run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ha-injector/ha-injector/webhook"
)

func main() {
	cfg := webhook.DefaultConfig()
	flag.StringVar(&cfg.WebhookHost, "webhook-host", "127.0.0.1", "listen address")
	flag.IntVar(&cfg.WebhookPort, "webhook-port", cfg.WebhookPort, "listen port")
	flag.StringVar(&cfg.CertPath, "webhook-cert-path", cfg.CertPath, "folder with tls.crt and tls.key")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
}

// allow answers every request "allowed"; controller-runtime has decoded it already.
type allow struct{}

func (allow) Handle(context.Context, admission.Request) admission.Response {
	return admission.Allowed("")
}

func run(ctx context.Context, cfg webhook.Config) error {
	server := crwebhook.NewServer(crwebhook.Options{
		Host: cfg.WebhookHost, Port: cfg.WebhookPort,
		CertDir: cfg.CertPath, CertName: cfg.CertName, KeyName: cfg.KeyName,
		TLSOpts: cfg.TLSOptions(),
	})
	hook := &admission.Webhook{Handler: allow{}}
	server.Register(webhook.PodPath, hook)
	server.Register(webhook.DeploymentPath, hook)
	ctrl.SetLogger(logr.Discard())
	return server.Start(ctx)
}
