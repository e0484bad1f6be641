package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"time"
)

// CA is a small certificate authority, the shape of what cert-manager's CA Issuer and
// the self-managed mode keep: the webhook configuration trusts the CA, so a renewed
// serving certificate needs no caBundle change. The demo, the end-to-end tests and the
// benchmarks use it to rotate certificates under load.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, the caBundle of a webhook configuration.
	PEM []byte
}

// NewCA creates a CA valid for validFor from now.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	kp, cert, key, err := sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, validFor, nil, nil)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, PEM: kp.Cert}, nil
}

// Issue signs a serving certificate for hosts (DNS names or IP addresses) with a new
// key, valid for validFor from now, and returns it with its serial number.
func (ca *CA) Issue(hosts []string, validFor time.Duration) (KeyPair, *big.Int, error) {
	kp, cert, _, err := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, hosts, validFor, ca.cert, ca.key)
	if err != nil {
		return KeyPair{}, nil, err
	}
	return kp, cert.SerialNumber, nil
}
