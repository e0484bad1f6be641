package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestServeMetricsSecureFlag(t *testing.T) {
	got := captureServe(t)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	selfManaged := []string{"serve", "--kubeconfig", kc, "--cert-mode=self-managed",
		"--cert-secret-name=s", "--cert-secret-namespace=n", "--webhook-configuration-name=w", "--cert-dns-name=w.n.svc"}

	r := runCLI(t, "", selfManaged...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, (*got).MetricsSecure, "HTTPS, authenticated and authorized, unless asked otherwise")

	*got = nil
	r = runCLI(t, "", append(selfManaged, "--metrics-secure=false")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.False(t, (*got).MetricsSecure)

	*got = nil
	r = runCLI(t, "", append(selfManaged, "--metrics-secure=maybe")...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, `invalid argument "maybe" for "--metrics-secure"`)
	assert.Nil(t, *got, "nothing is started")
}
