package certs

import (
	"errors"
	"fmt"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
)

// CertManagerChain is the cert-manager objects that give the webhook its serving
// certificate: a SelfSigned Issuer signs a CA Certificate, a CA Issuer backed by that
// CA's Secret signs the serving Certificate. A CA of its own, rather than a self-signed
// serving certificate, keeps the webhook configuration's caBundle stable: renewing the
// serving certificate does not change the CA cainjector copies into it.
type CertManagerChain struct {
	SelfSignedIssuer *cmapi.Issuer
	CA               *cmapi.Certificate
	CAIssuer         *cmapi.Issuer
	Serving          *cmapi.Certificate
}

// ChainOptions are what a CertManagerChain is built from.
type ChainOptions struct {
	// Name prefixes every object's name (the chart's full name).
	Name string
	// Service is the webhook's Service; the serving certificate is valid for its DNS names.
	Service types.NamespacedName
	// ClusterDomain is the cluster's DNS domain, e.g. cluster.local.
	ClusterDomain string
	// CADuration, Duration and RenewBefore are the CA's lifetime and the serving
	// certificate's lifetime and renewal margin.
	CADuration, Duration, RenewBefore time.Duration
}

// ServiceDNSNames are the names the API server may use to reach a Service: it dials
// <service>.<namespace>.svc, and some clients append the cluster domain.
func ServiceDNSNames(service types.NamespacedName, clusterDomain string) []string {
	base := service.Name + "." + service.Namespace + ".svc"
	return []string{base, base + "." + clusterDomain}
}

// NewCertManagerChain builds the chain the Helm chart renders, named after opts.Name in
// the Service's namespace.
func NewCertManagerChain(opts ChainOptions) CertManagerChain {
	ns := opts.Service.Namespace
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }
	issuerRef := func(name string) cmmeta.IssuerReference {
		return cmmeta.IssuerReference{Group: cmapi.SchemeGroupVersion.Group, Kind: cmapi.IssuerKind, Name: name}
	}
	caName := opts.Name + "-ca"
	return CertManagerChain{
		SelfSignedIssuer: &cmapi.Issuer{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.IssuerKind},
			ObjectMeta: meta(opts.Name + "-selfsigned"),
			Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
		},
		CA: &cmapi.Certificate{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
			ObjectMeta: meta(caName),
			Spec: cmapi.CertificateSpec{
				IsCA:       true,
				CommonName: caName,
				SecretName: caName,
				Duration:   &metav1.Duration{Duration: opts.CADuration},
				// The CA keeps its key when renewed, so what it signed before stays valid.
				PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyNever},
				IssuerRef:  issuerRef(opts.Name + "-selfsigned"),
			},
		},
		CAIssuer: &cmapi.Issuer{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.IssuerKind},
			ObjectMeta: meta(caName),
			Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: caName}}},
		},
		Serving: &cmapi.Certificate{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
			ObjectMeta: meta(opts.Name + "-tls"),
			Spec: cmapi.CertificateSpec{
				SecretName:  opts.Name + "-tls",
				DNSNames:    ServiceDNSNames(opts.Service, opts.ClusterDomain),
				Duration:    &metav1.Duration{Duration: opts.Duration},
				RenewBefore: &metav1.Duration{Duration: opts.RenewBefore},
				PrivateKey:  &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, RotationPolicy: cmapi.RotationPolicyAlways},
				Usages:      []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature},
				IssuerRef:   issuerRef(caName),
			},
		},
	}
}

// certManagerCodecs decodes cert-manager objects strictly: an unknown or duplicated
// field is an error, as it would be for `kubectl apply --validate=strict`.
var certManagerCodecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	if err := cmapi.AddToScheme(scheme); err != nil {
		panic(err) // static registration; cannot fail at run time
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}()

// DecodeCertManager decodes one Issuer or Certificate (YAML or JSON) with cert-manager's
// own types, rejecting unknown fields.
func DecodeCertManager(data []byte) (runtime.Object, error) {
	obj, _, err := certManagerCodecs.UniversalDeserializer().Decode(data, nil, nil)
	return obj, err
}

// FindCertManagerChain assembles the chain that ends in the serving Certificate named
// serving from decoded objects, following issuer references and the CA's Secret.
func FindCertManagerChain(objs []runtime.Object, serving types.NamespacedName) (CertManagerChain, error) {
	var chain CertManagerChain
	issuers := map[types.NamespacedName]*cmapi.Issuer{}
	certs := map[types.NamespacedName]*cmapi.Certificate{}
	for _, o := range objs {
		switch o := o.(type) {
		case *cmapi.Issuer:
			issuers[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = o
		case *cmapi.Certificate:
			certs[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = o
		}
	}
	issuerOf := func(c *cmapi.Certificate) (*cmapi.Issuer, error) {
		ref := c.Spec.IssuerRef
		if ref.Kind != cmapi.IssuerKind || (ref.Group != "" && ref.Group != cmapi.SchemeGroupVersion.Group) {
			return nil, fmt.Errorf("certificate %s/%s: issuerRef is %s.%s %q; want a namespaced Issuer of the release", c.Namespace, c.Name, ref.Kind, ref.Group, ref.Name)
		}
		i := issuers[types.NamespacedName{Namespace: c.Namespace, Name: ref.Name}]
		if i == nil {
			return nil, fmt.Errorf("certificate %s/%s: Issuer %q is not among the objects", c.Namespace, c.Name, ref.Name)
		}
		return i, nil
	}
	if chain.Serving = certs[serving]; chain.Serving == nil {
		return chain, fmt.Errorf("serving Certificate %s is not among the objects", serving)
	}
	var err error
	if chain.CAIssuer, err = issuerOf(chain.Serving); err != nil {
		return chain, err
	}
	if chain.CAIssuer.Spec.CA == nil {
		return chain, fmt.Errorf("issuer %s/%s signs the serving certificate but is not a CA Issuer", chain.CAIssuer.Namespace, chain.CAIssuer.Name)
	}
	for _, c := range certs {
		if c.Namespace == chain.CAIssuer.Namespace && c.Spec.SecretName == chain.CAIssuer.Spec.CA.SecretName {
			chain.CA = c
		}
	}
	if chain.CA == nil {
		return chain, fmt.Errorf("no Certificate writes Secret %q, the CA of Issuer %s/%s", chain.CAIssuer.Spec.CA.SecretName, chain.CAIssuer.Namespace, chain.CAIssuer.Name)
	}
	if chain.SelfSignedIssuer, err = issuerOf(chain.CA); err != nil {
		return chain, err
	}
	return chain, nil
}

// Check reports every way the chain would not give service a certificate the API server
// trusts for as long as the webhook runs.
func (c CertManagerChain) Check(service types.NamespacedName) error {
	var errs []error
	if c.SelfSignedIssuer.Spec.SelfSigned == nil {
		errs = append(errs, fmt.Errorf("issuer %s of the CA is not SelfSigned", c.SelfSignedIssuer.Name))
	}
	if !c.CA.Spec.IsCA {
		errs = append(errs, fmt.Errorf("certificate %s is used as a CA but has isCA false", c.CA.Name))
	}
	if pk := c.CA.Spec.PrivateKey; pk == nil || pk.RotationPolicy != cmapi.RotationPolicyNever {
		errs = append(errs, fmt.Errorf("certificate %s: the CA's privateKey.rotationPolicy must be Never, or a CA renewal invalidates the serving certificate until it is reissued", c.CA.Name))
	}
	errs = append(errs, CheckServingCertificate(c.Serving, service))
	s := c.Serving.Spec
	if s.SecretName == c.CA.Spec.SecretName {
		errs = append(errs, fmt.Errorf("serving certificate %s and the CA write the same Secret %q", c.Serving.Name, s.SecretName))
	}
	if s.Duration != nil && c.CA.Spec.Duration != nil && s.Duration.Duration > c.CA.Spec.Duration.Duration {
		errs = append(errs, fmt.Errorf("serving certificate %s outlives its CA (%s > %s)", c.Serving.Name, s.Duration.Duration, c.CA.Spec.Duration.Duration))
	}
	for _, o := range []metav1.Object{c.SelfSignedIssuer, c.CA, c.CAIssuer} {
		if o.GetNamespace() != service.Namespace {
			errs = append(errs, fmt.Errorf("%s is in namespace %q, not the Service's %q", o.GetName(), o.GetNamespace(), service.Namespace))
		}
	}
	return errors.Join(errs...)
}

// CheckServingCertificate reports every way cert would not serve service: not valid for
// the name the API server dials, not for server auth, a CA, renewed too late, or in
// another namespace. It holds whoever issues the certificate (the chart's own CA chain or
// an issuer of the user's, certManager.issuerRef).
func CheckServingCertificate(cert *cmapi.Certificate, service types.NamespacedName) error {
	var errs []error
	s := cert.Spec
	if s.IsCA {
		errs = append(errs, fmt.Errorf("serving certificate %s has isCA true", cert.Name))
	}
	want := service.Name + "." + service.Namespace + ".svc"
	if !slices.Contains(s.DNSNames, want) {
		errs = append(errs, fmt.Errorf("serving certificate %s: dnsNames %v lack %s, the name the API server dials", cert.Name, s.DNSNames, want))
	}
	if len(s.Usages) > 0 && !slices.Contains(s.Usages, cmapi.UsageServerAuth) {
		errs = append(errs, fmt.Errorf("serving certificate %s: usages %v lack %q", cert.Name, s.Usages, cmapi.UsageServerAuth))
	}
	if s.Duration != nil && s.RenewBefore != nil && s.RenewBefore.Duration >= s.Duration.Duration {
		errs = append(errs, fmt.Errorf("serving certificate %s: renewBefore %s is not shorter than duration %s", cert.Name, s.RenewBefore.Duration, s.Duration.Duration))
	}
	if cert.Namespace != service.Namespace {
		errs = append(errs, fmt.Errorf("serving certificate %s is in namespace %q, not the Service's %q", cert.Name, cert.Namespace, service.Namespace))
	}
	return errors.Join(errs...)
}

// InjectCAFrom is the value of cainjector's annotation (cmapi.WantInjectAnnotation) that makes
// cainjector copy the serving certificate's CA into a webhook configuration.
func (c CertManagerChain) InjectCAFrom() string {
	return c.Serving.Namespace + "/" + c.Serving.Name
}
