package certs

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCAIssuesCertificatesItsPEMVerifies(t *testing.T) {
	ca, err := NewCA("test-ca", time.Hour)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.PEM))

	first, serial1, err := ca.Issue([]string{"ha-injector.ha-injector.svc", "127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	second, serial2, err := ca.Issue([]string{"ha-injector.ha-injector.svc"}, time.Hour)
	require.NoError(t, err)
	assert.NotEqual(t, serial1, serial2, "every certificate has its own serial")

	for _, kp := range []KeyPair{first, second} {
		pair, err := tls.X509KeyPair(kp.Cert, kp.Key)
		require.NoError(t, err, "the key matches the certificate")
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		require.NoError(t, err)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "ha-injector.ha-injector.svc", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err, "a renewed certificate is trusted through the same caBundle")
		assert.False(t, leaf.IsCA)
	}
	leaf, err := x509.ParseCertificate(mustPair(t, first).Certificate[0])
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"})
	assert.NoError(t, err, "IP addresses become IP SANs")

	other, err := NewCA("other", time.Hour)
	require.NoError(t, err)
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(other.PEM)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: otherPool, DNSName: "127.0.0.1"})
	assert.Error(t, err, "another CA does not vouch for it")
}

func mustPair(t *testing.T, kp KeyPair) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(kp.Cert, kp.Key)
	require.NoError(t, err)
	return pair
}
