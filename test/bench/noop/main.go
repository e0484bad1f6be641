// Command noop is the baseline of the admission benchmarks: the same controller-runtime
// webhook server as `ha-injector serve` (same TLS settings, HTTP/1.1 only, same paths),
// whose handler only decodes the AdmissionReview and answers "allowed". What it costs is
// the floor any webhook pays; ha-injector is measured against it in the same run, over
// TLS and registered in kube-apiserver the same way.
//
// GET /answered returns how many admissions it has answered: an "allowed" without a
// patch leaves no trace on the object, so that is how the benchmark sees the API server
// calling it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
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

// allow answers every request "allowed" and counts it; controller-runtime has decoded
// it already.
type allow struct{ answered *atomic.Int64 }

func (a allow) Handle(context.Context, admission.Request) admission.Response {
	a.answered.Add(1)
	return admission.Allowed("")
}

func run(ctx context.Context, cfg webhook.Config) error {
	server := crwebhook.NewServer(crwebhook.Options{
		Host: cfg.WebhookHost, Port: cfg.WebhookPort,
		CertDir: cfg.CertPath, CertName: cfg.CertName, KeyName: cfg.KeyName,
		TLSOpts: cfg.TLSOptions(),
	})
	answered := &atomic.Int64{}
	hook := &admission.Webhook{Handler: allow{answered: answered}}
	server.Register(webhook.PodPath, hook)
	server.Register(webhook.DeploymentPath, hook)
	server.Register("/answered", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, answered.Load())
	}))
	ctrl.SetLogger(logr.Discard())
	return server.Start(ctx)
}
