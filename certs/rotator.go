package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Names of what the self-managed mode writes. The Secret's keys are
// cert-controller's (ca.crt and ca.key are fixed by the library; the serving
// pair uses the webhook's --webhook-cert-name and --webhook-cert-key, so the
// mounted Secret has exactly the files the webhook server loads).
const (
	// CACertKey is the Secret key of the CA certificate, the PEM written as caBundle.
	CACertKey = "ca.crt"
	// CAKeyKey is the Secret key of the CA's private key.
	CAKeyKey = "ca.key"
	// CAName is the common name of the CA the self-managed mode creates.
	CAName = "ha-injector-ca"
	// FieldOwner is the field manager of the caBundle writes, so that
	// managedFields show who set it.
	FieldOwner = "ha-injector"
)

// SelfManaged configures the self-managed certificate mode: ha-injector keeps
// a CA and a serving certificate in Secret, writes the CA into every webhook
// of WebhookConfiguration as caBundle, and renews the serving certificate
// RenewBefore its expiry. Every replica runs the rotator; they need no leader
// election because they coordinate through the Secret: each update carries
// the resourceVersion it read, so when two replicas renew at once the API
// server rejects the second write, and that replica then reads the first
// one's still-valid certificate and keeps it.
type SelfManaged struct {
	// Secret holds ca.crt, ca.key and the serving pair. It must exist (the
	// chart creates it empty, type Opaque): cert-controller updates it but
	// never creates it, and creating Secrets is a verb RBAC cannot restrict
	// to one name.
	Secret types.NamespacedName
	// WebhookConfiguration is the MutatingWebhookConfiguration whose webhooks
	// all get the CA as clientConfig.caBundle.
	WebhookConfiguration string
	// DNSNames are the names the serving certificate is valid for; the first
	// is its common name and the name the certificate is checked against.
	DNSNames []string
	// CADuration is the CA's lifetime. Duration is the serving certificate's.
	CADuration, Duration time.Duration
	// RenewBefore is how long before expiry a certificate is replaced
	// (cert-controller's LookaheadInterval). It applies to the CA as well:
	// a CA within RenewBefore of its end is replaced together with the
	// serving certificate.
	RenewBefore time.Duration
	// CheckInterval is how often the Secret is checked for a certificate to
	// renew (cert-controller's RotationCheckFrequency); any change to the
	// Secret or the webhook configuration is also checked at once.
	CheckInterval time.Duration
}

// DefaultSelfManaged returns cert-controller's own defaults, spelled out so
// the flags show them: a 10-year CA, a 1-year serving certificate renewed 90
// days before expiry, checked every 12 hours.
func DefaultSelfManaged() SelfManaged {
	return SelfManaged{
		CADuration:    10 * 365 * 24 * time.Hour,
		Duration:      365 * 24 * time.Hour,
		RenewBefore:   90 * 24 * time.Hour,
		CheckInterval: 12 * time.Hour,
	}
}

// Mount is where the Secret appears as files in the pod: Dir is the
// Secret volume's mount path (--webhook-cert-path), CertName and KeyName the
// serving pair's keys in the Secret and file names in Dir.
type Mount struct {
	Dir, CertName, KeyName string
}

// rotators numbers the rotators of this process. controller-runtime refuses
// two controllers of the same name in one process (their metrics would mix)
// and cert-controller builds its controller without the option to skip that
// check; a serving process has one rotator, but a test runs several managers.
var rotators atomic.Int32

// AddRotator adds cert-controller's rotator to mgr and returns a channel that
// is closed once the serving certificate is usable: the Secret holds a valid
// CA and serving certificate, the CA has been written into the webhook
// configuration, and the serving certificate's file exists in m.Dir.
//
// cert-controller never writes files: it only waits (with backoff, 8 to 17
// minutes in all) for m.Dir/m.CertName to appear, because in a pod the
// Secret is mounted there and the kubelet copies a changed Secret into the
// volume within its sync period (about a minute). The volume must therefore
// be a whole-Secret mount, not a subPath one (subPath mounts are never
// updated). If the file never appears, the rotator fails and the manager
// stops with an error. Start the webhook server only after the channel is
// closed: before, there is no file for it to load.
func AddRotator(mgr manager.Manager, sm SelfManaged, m Mount) (<-chan struct{}, error) {
	if len(sm.DNSNames) == 0 {
		return nil, errors.New("self-managed certificates need at least one DNS name")
	}
	name := "cert-rotator"
	if n := rotators.Add(1); n > 1 {
		name = fmt.Sprintf("cert-rotator-%d", n)
	}
	ready := make(chan struct{})
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      sm.Secret,
		CertDir:        m.Dir,
		CertName:       m.CertName,
		KeyName:        m.KeyName,
		CAName:         CAName,
		CAOrganization: "ha-injector",
		DNSName:        sm.DNSNames[0],
		ExtraDNSNames:  sm.DNSNames[1:],
		IsReady:        ready,
		Webhooks:       []rotator.WebhookInfo{{Name: sm.WebhookConfiguration, Type: rotator.Mutating}},
		FieldOwner:     FieldOwner,
		// certwatcher reloads renewed files; restarting the pod would only
		// cost capacity.
		RestartOnSecretRefresh: false,
		// Every replica rotates: they coordinate through the Secret (see
		// SelfManaged), and a replica must be able to bootstrap and renew
		// its own certificate without waiting for a leader.
		RequireLeaderElection:  false,
		ExtKeyUsages:           &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CaCertDuration:         sm.CADuration,
		ServerCertDuration:     sm.Duration,
		LookaheadInterval:      sm.RenewBefore,
		RotationCheckFrequency: sm.CheckInterval,
		ControllerName:         name,
	})
	if err != nil {
		return nil, fmt.Errorf("adding the certificate rotator: %w", err)
	}
	return ready, nil
}

// CheckSecret reports whether the Secret the rotator fills exists. Without
// it cert-controller retries for some seconds and then stops the manager
// with a bare "not found"; checking first names the Secret and the fix.
func CheckSecret(ctx context.Context, r client.Reader, key types.NamespacedName) error {
	err := r.Get(ctx, key, &corev1.Secret{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("secret %s does not exist: self-managed certificates are kept in an existing Secret (create it empty, type Opaque; the Helm chart does)", key)
	}
	if err != nil {
		return fmt.Errorf("reading secret %s: %w", key, err)
	}
	return nil
}
