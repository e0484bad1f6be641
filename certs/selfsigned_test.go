package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSelfSignedServesItsHostsAndIsItsOwnCA(t *testing.T) {
	kp, err := SelfSigned([]string{"127.0.0.1", "ha-injector.ha-injector.svc"}, time.Hour)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(kp.Cert, kp.Key)
	require.NoError(t, err, "the key matches the certificate")
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(kp.Cert))
	for _, host := range []string{"127.0.0.1", "ha-injector.ha-injector.svc"} {
		_, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots})
		assert.NoError(t, err, host)
	}
	_, err = cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots})
	assert.Error(t, err)
	assert.WithinDuration(t, time.Now().Add(time.Hour), cert.NotAfter, time.Minute)
}

func TestWriteFilesReplacesBothFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	first, err := SelfSigned([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	second, err := SelfSigned([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, first.WriteFiles(dir, "tls.crt", "tls.key"))
	require.NoError(t, second.WriteFiles(dir, "tls.crt", "tls.key"))

	got, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	require.NoError(t, err)
	assert.Equal(t, second.Cert, got)
	_, err = tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	assert.NoError(t, err)
	leftovers, err := filepath.Glob(filepath.Join(dir, ".*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "no temporary files left behind")
}
