package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyPair is a PEM-encoded certificate and its private key.
type KeyPair struct {
	Cert, Key []byte
}

// SelfSigned returns a certificate for hosts (DNS names or IP addresses),
// valid for the given duration from now, signed by its own key: it is its
// own CA, so the same PEM serves as the webhook configuration's caBundle.
func SelfSigned(hosts []string, validFor time.Duration) (KeyPair, error) {
	kp, _, _, err := sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "ha-injector"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, hosts, validFor, nil, nil)
	return kp, err
}

// sign completes tmpl (a random serial, valid from a minute ago for validFor, hosts as
// DNS or IP subject alternative names), gives it a new P-256 key and signs it with
// parent's key, or with its own when parent is nil. It returns the PEM pair, the parsed
// certificate and the key.
func sign(tmpl *x509.Certificate, hosts []string, validFor time.Duration, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (KeyPair, *x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return KeyPair{}, nil, nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(validFor)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return KeyPair{}, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return KeyPair{}, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, nil, nil, err
	}
	return KeyPair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, cert, key, nil
}

// WriteFiles writes the pair as dir/certName and dir/keyName. Each file is
// written to a temporary name and renamed into place, so a watcher never
// reads a half-written file; between the two renames the files do not match,
// and certwatcher keeps serving the previous pair until they do.
func (kp KeyPair) WriteFiles(dir, certName, keyName string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{keyName: kp.Key, certName: kp.Cert} {
		tmp, err := os.CreateTemp(dir, "."+name+"-*")
		if err != nil {
			return err
		}
		if _, err := tmp.Write(data); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}
