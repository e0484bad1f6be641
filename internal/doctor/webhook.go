package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/installation"
)

// injectCAFromAnnotation is cert-manager's cainjector annotation: namespace/Certificate.
const injectCAFromAnnotation = "cert-manager.io/inject-ca-from"

// selfManagedMode is serve's --cert-mode for a certificate it makes itself.
const selfManagedMode = "self-managed"

// checkWebhookConfiguration: ha-injector's MutatingWebhookConfiguration exists, with
// its webhooks, failurePolicy and a caBundle. It returns false when there is none.
func (d *doctor) checkWebhookConfiguration(ctx context.Context) bool {
	const name = "webhook-configuration"
	in, err := installation.Find(ctx, d.c, d.opts.ReleaseNamespace)
	if err != nil {
		switch {
		case errors.Is(err, installation.ErrNotInstalled):
			d.report.add(Check{Name: name, Status: Fail, Message: shortErr(err),
				Fix: "helm install ha-injector charts/ha-injector -n ha-injector --create-namespace (docs/install.md, Install on a cluster); after an install that failed, run doctor with --release-namespace: its release-pods check says why"})
		case apierrors.IsForbidden(err):
			d.report.add(cannotRead(name, "mutatingwebhookconfigurations", err))
		default:
			d.report.add(Check{Name: name, Status: Fail, Message: shortErr(err), Fix: "pass --release-namespace"})
		}
		return false
	}
	d.install = in
	mwc := in.Webhooks
	var hooks, empty []string
	policies := map[string]bool{}
	for _, h := range mwc.Webhooks {
		fp := "Fail"
		if h.FailurePolicy != nil {
			fp = string(*h.FailurePolicy)
		}
		policies[fp] = true
		hooks = append(hooks, h.Name)
		if strings.HasSuffix(h.Name, installation.WebhookSuffix) && len(h.ClientConfig.CABundle) == 0 {
			empty = append(empty, h.Name)
		}
	}
	var fps []string
	for fp := range policies {
		fps = append(fps, fp)
	}
	sort.Strings(fps)
	target := in.URL
	if in.Service != nil {
		target = "Service " + in.Service.String()
	}
	msg := fmt.Sprintf("%s: %d webhooks (%s), failurePolicy %s, calling %s", mwc.Name, len(hooks), strings.Join(hooks, ", "), strings.Join(fps, "/"), target)
	if len(empty) > 0 {
		d.report.add(Check{Name: name, Status: Fail, Message: msg + "; empty caBundle in " + strings.Join(empty, ", ") + ": the API server cannot call the webhook",
			Fix: d.caBundleFix()})
		return true
	}
	d.report.add(Check{Name: name, Status: OK, Message: msg})
	return true
}

// caBundleFix says who writes the caBundle in this installation's certificate mode.
func (d *doctor) caBundleFix() string {
	switch {
	case d.install.Webhooks.Annotations[injectCAFromAnnotation] != "":
		return "cert-manager's cainjector writes it from Certificate " + d.install.Webhooks.Annotations[injectCAFromAnnotation] + ": check that cainjector runs (kubectl -n cert-manager get pods) and the cert-manager check"
	case d.install.Settings.CertMode == selfManagedMode:
		return "serve writes it at start (certs.mode=selfManaged): kubectl -n " + d.install.Namespace + " logs deploy/" + d.deploymentName() + " says why it could not"
	default:
		return "set certs.provided.caBundle to the base64 PEM of the CA that signed the serving certificate"
	}
}

func (d *doctor) deploymentName() string {
	if d.install.Deployment != nil {
		return d.install.Deployment.Name
	}
	if d.install.Service != nil {
		return d.install.Service.Name
	}
	return "ha-injector"
}

// checkServingCertificate: the caBundle verifies the certificate the webhook serves
// (read from its Secret, or from the URL itself for a `url` clientConfig), which is not
// about to expire.
func (d *doctor) checkServingCertificate(ctx context.Context) {
	const name = "serving-certificate"
	hook := d.podHook()
	if len(hook.ClientConfig.CABundle) == 0 {
		return // reported by webhook-configuration
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(hook.ClientConfig.CABundle) {
		d.report.add(Check{Name: name, Status: Fail, Message: "the caBundle of " + hook.Name + " holds no PEM certificate", Fix: d.caBundleFix()})
		return
	}
	chain, host, from, check := d.servedCertificate(ctx)
	if check != nil {
		d.report.add(*check)
		return
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	verified, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: host, CurrentTime: d.opts.Now})
	if err != nil {
		d.report.add(Check{Name: name, Status: Fail, Message: fmt.Sprintf("the caBundle does not verify the serving certificate (%s) for %s: %v", from, host, err),
			Fix: d.caBundleFix()})
		return
	}
	// The chain breaks when its first certificate expires, the CA's included.
	expiry := verified[0][0].NotAfter
	for _, c := range verified[0] {
		if c.NotAfter.Before(expiry) {
			expiry = c.NotAfter
		}
	}
	left := expiry.Sub(d.opts.Now)
	msg := fmt.Sprintf("the caBundle verifies the serving certificate (%s) for %s; the chain expires %s (in %s)", from, host, expiry.UTC().Format(time.RFC3339), days(left))
	if left < CertExpiryWarning {
		d.report.add(Check{Name: name, Status: Warn, Message: msg, Fix: "renewal should have happened by now: " + d.renewalFix()})
		return
	}
	d.report.add(Check{Name: name, Status: OK, Message: msg})
}

func (d *doctor) renewalFix() string {
	switch {
	case d.install.Webhooks.Annotations[injectCAFromAnnotation] != "":
		return "kubectl describe certificate -n " + strings.Replace(d.install.Webhooks.Annotations[injectCAFromAnnotation], "/", " ", 1)
	case d.install.Settings.CertMode == selfManagedMode:
		return "serve renews it; kubectl -n " + d.install.Namespace + " logs deploy/" + d.deploymentName() + " says why it did not"
	default:
		return "replace the certificate (certs.mode=provided)"
	}
}

func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// servedCertificate reads the chain the webhook serves, the name the API server checks
// it against, and where it came from; or the check to report when it cannot.
func (d *doctor) servedCertificate(ctx context.Context) ([]*x509.Certificate, string, string, *Check) {
	const name = "serving-certificate"
	in := d.install
	if in.Service == nil {
		return dialCertificate(in.URL)
	}
	host := in.Service.Name + "." + in.Service.Namespace + ".svc"
	if in.Settings.CertSecret == "" {
		return nil, "", "", &Check{Name: name, Status: Warn, Message: "cannot find the serving certificate's Secret: no webhook Deployment mounts one at " + installation.TLSMountPath,
			Fix: "pass --release-namespace if the chart is installed elsewhere"}
	}
	var s corev1.Secret
	key := types.NamespacedName{Namespace: in.Namespace, Name: in.Settings.CertSecret}
	if err := d.c.Get(ctx, key, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "", "", &Check{Name: name, Status: Fail, Message: "the serving certificate's Secret " + key.String() + " does not exist: the webhook pods cannot start",
				Fix: d.caBundleFix()}
		}
		c := cannotRead(name, "secrets in "+in.Namespace, err)
		return nil, "", "", &c
	}
	chain, err := parseChain(s.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, "", "", &Check{Name: name, Status: Fail, Message: fmt.Sprintf("Secret %s: %s: %v", key, corev1.TLSCertKey, err), Fix: d.caBundleFix()}
	}
	return chain, host, "Secret " + key.String(), nil
}

// dialCertificate reads the chain a `url` webhook serves, bounded by 5 s.
func dialCertificate(raw string) ([]*x509.Certificate, string, string, *Check) {
	const name = "serving-certificate"
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", "", &Check{Name: name, Status: Fail, Message: fmt.Sprintf("clientConfig.url %q: %v", raw, err)}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	// Verified below against the caBundle, not the system roots.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()}) //nolint:gosec // verified against the caBundle
	if err != nil {
		return nil, "", "", &Check{Name: name, Status: Warn, Message: fmt.Sprintf("cannot read the certificate served at %s from here: %v", addr, err),
			Fix: "the API server may reach what doctor cannot; the probe check is what counts"}
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, u.Hostname(), u.Host, nil
}

func parseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return chain, nil
}

// checkCertManager: with cert-manager, the Certificate is Ready, its issuer Ready, and
// its CA in the caBundle. Without it (no inject-ca-from annotation), nothing is reported.
func (d *doctor) checkCertManager(ctx context.Context) {
	const name = "cert-manager"
	ref := d.install.Webhooks.Annotations[injectCAFromAnnotation]
	if ref == "" {
		return
	}
	ns, certName, ok := strings.Cut(ref, "/")
	if !ok {
		d.report.add(Check{Name: name, Status: Fail, Message: fmt.Sprintf("annotation %s=%q is not namespace/name", injectCAFromAnnotation, ref)})
		return
	}
	var cert cmapi.Certificate
	if err := d.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: certName}, &cert); err != nil {
		if meta404(err) {
			d.report.add(Check{Name: name, Status: Fail, Message: "Certificate " + ref + " (named by " + injectCAFromAnnotation + ") does not exist, or cert-manager is not installed",
				Fix: "install cert-manager first (docs/install.md, Install on a cluster), then helm upgrade"})
			return
		}
		d.report.add(cannotRead(name, "certificates.cert-manager.io", err))
		return
	}
	if c := condition(cert.Status.Conditions, cmapi.CertificateConditionReady); c == nil || c.Status != cmmeta.ConditionTrue {
		d.report.add(Check{Name: name, Status: Fail, Message: "Certificate " + ref + " is not Ready" + conditionText(c),
			Fix: "kubectl -n " + ns + " describe certificate " + certName + " (and its CertificateRequest)"})
		return
	}
	notAfter := "unknown"
	if cert.Status.NotAfter != nil {
		notAfter = cert.Status.NotAfter.UTC().Format(time.RFC3339)
	}
	issuer, ready, err := d.issuerReady(ctx, ns, cert.Spec.IssuerRef)
	if err != nil {
		d.report.add(Check{Name: name, Status: Fail, Message: "Certificate " + ref + " is Ready, but its issuer " + issuer + ": " + shortErr(err),
			Fix: "kubectl describe " + strings.ToLower(issuer)})
		return
	}
	if !ready {
		d.report.add(Check{Name: name, Status: Fail, Message: "Certificate " + ref + " is Ready, but its issuer " + issuer + " is not: renewals will fail",
			Fix: "kubectl describe " + strings.ToLower(issuer)})
		return
	}
	msg := fmt.Sprintf("Certificate %s Ready (notAfter %s), issuer %s Ready", ref, notAfter, issuer)
	var s corev1.Secret
	if err := d.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: cert.Spec.SecretName}, &s); err != nil {
		d.report.add(Check{Name: name, Status: Warn, Message: msg + "; cannot read its Secret to compare the CA with the caBundle: " + shortErr(err)})
		return
	}
	if !caInjected(s.Data["ca.crt"], d.podHook().ClientConfig.CABundle) {
		d.report.add(Check{Name: name, Status: Fail, Message: msg + ", but the CA in its Secret (ca.crt) is not in the webhook's caBundle",
			Fix: "cainjector copies it: kubectl -n cert-manager logs deploy/cert-manager-cainjector"})
		return
	}
	d.report.add(Check{Name: name, Status: OK, Message: msg + ", its CA injected into the caBundle"})
}

// issuerReady reads the Issuer (in ns) or ClusterIssuer a Certificate names.
func (d *doctor) issuerReady(ctx context.Context, ns string, ref cmmeta.IssuerReference) (string, bool, error) {
	var conds []cmapi.IssuerCondition
	desc := "Issuer " + ns + "/" + ref.Name
	switch {
	case ref.Kind == cmapi.ClusterIssuerKind:
		desc = "ClusterIssuer " + ref.Name
		var ci cmapi.ClusterIssuer
		if err := d.c.Get(ctx, types.NamespacedName{Name: ref.Name}, &ci); err != nil {
			return desc, false, err
		}
		conds = ci.Status.Conditions
	case ref.Kind == "" || ref.Kind == cmapi.IssuerKind:
		var is cmapi.Issuer
		if err := d.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, &is); err != nil {
			return desc, false, err
		}
		conds = is.Status.Conditions
	default:
		// An external issuer (another group): its readiness is its own business.
		return ref.Kind + " " + ref.Name, true, nil
	}
	for _, c := range conds {
		if c.Type == cmapi.IssuerConditionReady {
			return desc, c.Status == cmmeta.ConditionTrue, nil
		}
	}
	return desc, false, nil
}

func condition(conds []cmapi.CertificateCondition, t cmapi.CertificateConditionType) *cmapi.CertificateCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

func conditionText(c *cmapi.CertificateCondition) string {
	if c == nil {
		return " (no Ready condition yet)"
	}
	return fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
}

// caInjected reports whether every certificate of ca is in bundle.
func caInjected(ca, bundle []byte) bool {
	want, err := parseChain(ca)
	if err != nil {
		return false
	}
	have, err := parseChain(bundle)
	if err != nil {
		return false
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Equal(w) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// checkDeployment: the webhook's Deployment has available replicas and its Service
// ready endpoints. A `url` clientConfig has neither to check.
func (d *doctor) checkDeployment(ctx context.Context) {
	const name = "webhook-pods"
	in := d.install
	if in.Service == nil {
		d.report.add(Check{Name: name, Status: OK, Message: "clientConfig is a URL (" + in.URL + "): no Deployment or Service to check"})
		return
	}
	if in.Deployment == nil {
		d.report.add(Check{Name: name, Status: Fail, Message: "no webhook Deployment in " + in.Namespace + " (named " + in.Service.Name + ", or labelled " + installation.ComponentLabel + "=webhook)",
			Fix: "helm -n " + in.Namespace + " status RELEASE; reinstall the chart"})
		return
	}
	dep := in.Deployment
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	var slices discoveryv1.EndpointSliceList
	if err := d.c.List(ctx, &slices, client.InNamespace(in.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: in.Service.Name}); err != nil {
		d.report.add(cannotRead(name, "endpointslices in "+in.Namespace, err))
		return
	}
	ready := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			// nil means unknown, which consumers are told to read as ready.
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready++
			}
		}
	}
	msg := fmt.Sprintf("Deployment %s/%s: %d of %d replicas available; Service %s: %d ready endpoints", in.Namespace, dep.Name, dep.Status.AvailableReplicas, want, in.Service, ready)
	fix := "kubectl -n " + in.Namespace + " describe deploy/" + dep.Name + "; kubectl -n " + in.Namespace + " logs deploy/" + dep.Name
	switch {
	case dep.Status.AvailableReplicas == 0 || ready == 0:
		d.report.add(Check{Name: name, Status: Fail, Message: msg + ": the API server cannot reach the webhook", Fix: fix})
	case dep.Status.AvailableReplicas < want:
		d.report.add(Check{Name: name, Status: Warn, Message: msg + ": not every replica is available", Fix: fix})
	case want < 2:
		d.report.add(Check{Name: name, Status: Warn, Message: msg + ": while the single replica restarts, pods are admitted without the injection (failurePolicy Ignore) or rejected (Fail)",
			Fix: "helm upgrade with replicaCount=2 or more"})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: msg})
	}
}
