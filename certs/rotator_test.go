package certs

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// The rotator itself runs against a real API server in the webhook
// package's tests (TestSelfManaged*), where `serve` wires it.

func TestCheckSecretNamesTheMissingSecretAndTheFix(t *testing.T) {
	key := types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"}
	empty := fake.NewClientBuilder().Build()
	err := CheckSecret(context.Background(), empty, key)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "secret ha-injector/ha-injector-tls does not exist")
	assert.Contains(t, err.Error(), "create it empty, type Opaque")

	withSecret := fake.NewClientBuilder().WithObjects(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}).Build()
	assert.NoError(t, CheckSecret(context.Background(), withSecret, key), "an empty Secret is what the rotator expects")
}

func TestAddRotatorNeedsADNSName(t *testing.T) {
	_, err := AddRotator(nil, DefaultSelfManaged(), Mount{Dir: t.TempDir(), CertName: "tls.crt", KeyName: "tls.key"})
	assert.ErrorContains(t, err, "at least one DNS name")
}
