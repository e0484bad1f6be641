// Command minimal is the cheapest real mutating webhook anyone writes, the way
// controller-runtime's documentation teaches it: admission.WithDefaulter around a
// Defaulter whose Default caps the two NoExecute tolerations of a Pod (not-ready at
// 60 s, unreachable at 30 s: shortened in place when longer, added when missing), and
// nothing else. controller-runtime decodes the Pod, calls Default, and answers with the
// JSON patch between the request's object and the defaulted one
// (admission.PatchResponseFromRaw).
//
// It is the peers benchmark's floor for a handler that decodes the object and answers
// with a patch: the same controller-runtime webhook server as `ha-injector serve` and the
// no-op (same TLS settings, HTTP/1.1 only, same path for Pods), with no namespace or
// policy lookup: which namespaces it serves is left to its webhook configuration's
// namespaceSelector. With --pprof-bind-address, Go's /debug/pprof profiles are served
// on a listener of their own, as serve's are, so the benchmark can profile it too.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ha-injector/ha-injector/webhook"
)

// The caps, as ha-injector's default HAPolicy has them.
const (
	notReadySeconds    = 60
	unreachableSeconds = 30
)

func main() {
	cfg := webhook.DefaultConfig()
	flag.StringVar(&cfg.WebhookHost, "webhook-host", "127.0.0.1", "listen address")
	flag.IntVar(&cfg.WebhookPort, "webhook-port", cfg.WebhookPort, "listen port")
	flag.StringVar(&cfg.CertPath, "webhook-cert-path", cfg.CertPath, "folder with tls.crt and tls.key")
	pprofAddr := flag.String("pprof-bind-address", "", "address of Go's /debug/pprof profiles (empty: none)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "minimal:", err)
			os.Exit(1)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(ln, mux) }()
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "minimal:", err)
		os.Exit(1)
	}
}

// podTolerations is the Defaulter.
type podTolerations struct{}

var _ admission.Defaulter[*corev1.Pod] = podTolerations{}

// Default caps the not-ready and unreachable NoExecute tolerations of pod.
func (podTolerations) Default(_ context.Context, pod *corev1.Pod) error {
	capToleration(pod, "node.kubernetes.io/not-ready", notReadySeconds)
	capToleration(pod, "node.kubernetes.io/unreachable", unreachableSeconds)
	return nil
}

// capToleration shortens the first NoExecute toleration of key to seconds when it is
// longer, or adds one when there is none; one without seconds (tolerate forever) is
// the workload's choice and kept.
func capToleration(pod *corev1.Pod, key string, seconds int64) {
	for i := range pod.Spec.Tolerations {
		t := &pod.Spec.Tolerations[i]
		if t.Key != key || (t.Effect != "" && t.Effect != corev1.TaintEffectNoExecute) {
			continue
		}
		if t.TolerationSeconds != nil && *t.TolerationSeconds > seconds {
			t.TolerationSeconds = &seconds
		}
		return
	}
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{
		Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &seconds,
	})
}

func run(ctx context.Context, cfg webhook.Config) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	server := crwebhook.NewServer(crwebhook.Options{
		Host: cfg.WebhookHost, Port: cfg.WebhookPort,
		CertDir: cfg.CertPath, CertName: cfg.CertName, KeyName: cfg.KeyName,
		TLSOpts: cfg.TLSOptions(),
	})
	server.Register(webhook.PodPath, admission.WithDefaulter[*corev1.Pod](scheme, podTolerations{}))
	ctrl.SetLogger(logr.Discard())
	return server.Start(ctx)
}
