package certs

import (
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

var service = types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector"}

func chain() CertManagerChain {
	return NewCertManagerChain(ChainOptions{
		Name: "ha-injector", Service: service, ClusterDomain: "cluster.local",
		CADuration: 5 * 365 * 24 * time.Hour, Duration: 90 * 24 * time.Hour, RenewBefore: 30 * 24 * time.Hour,
	})
}

func TestCertManagerChainChecks(t *testing.T) {
	require.NoError(t, chain().Check(service), "the chain the chart renders")

	cases := map[string]struct {
		break_ func(*CertManagerChain)
		want   string
	}{
		"a serving certificate without the Service's name": {func(c *CertManagerChain) { c.Serving.Spec.DNSNames = []string{"other.svc"} }, "lack ha-injector.ha-injector.svc"},
		"a CA whose key changes on renewal":                {func(c *CertManagerChain) { c.CA.Spec.PrivateKey.RotationPolicy = cmapi.RotationPolicyAlways }, "rotationPolicy must be Never"},
		"a CA that is not one":                             {func(c *CertManagerChain) { c.CA.Spec.IsCA = false }, "isCA false"},
		"renewal no earlier than expiry":                   {func(c *CertManagerChain) { c.Serving.Spec.RenewBefore.Duration = 100 * 24 * time.Hour }, "renewBefore"},
		"a serving certificate outliving its CA":           {func(c *CertManagerChain) { c.Serving.Spec.Duration.Duration = 6 * 365 * 24 * time.Hour }, "outlives its CA"},
		"one Secret for both":                              {func(c *CertManagerChain) { c.Serving.Spec.SecretName = c.CA.Spec.SecretName }, "the same Secret"},
		"no server auth":                                   {func(c *CertManagerChain) { c.Serving.Spec.Usages = []cmapi.KeyUsage{cmapi.UsageClientAuth} }, "server auth"},
		"another namespace":                                {func(c *CertManagerChain) { c.CAIssuer.Namespace = "elsewhere" }, `namespace "elsewhere"`},
		"a CA issuer that is not self-signed":              {func(c *CertManagerChain) { c.SelfSignedIssuer.Spec.SelfSigned = nil }, "not SelfSigned"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := chain()
			tc.break_(&c)
			err := c.Check(service)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestFindCertManagerChainFollowsTheReferences(t *testing.T) {
	c := chain()
	objs := []runtime.Object{c.Serving, c.CAIssuer, c.SelfSignedIssuer, c.CA}
	got, err := FindCertManagerChain(objs, types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"})
	require.NoError(t, err)
	assert.Equal(t, c, got)
	assert.Equal(t, "ha-injector/ha-injector-tls", got.InjectCAFrom())

	_, err = FindCertManagerChain([]runtime.Object{c.Serving, c.SelfSignedIssuer, c.CA}, types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"})
	assert.ErrorContains(t, err, `Issuer "ha-injector-ca" is not among the objects`)
	_, err = FindCertManagerChain([]runtime.Object{c.Serving, c.CAIssuer, c.SelfSignedIssuer}, types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"})
	assert.ErrorContains(t, err, "no Certificate writes Secret")
	_, err = FindCertManagerChain(objs, types.NamespacedName{Namespace: "ha-injector", Name: "nope"})
	assert.ErrorContains(t, err, "not among the objects")
}

func TestDecodeCertManagerIsStrict(t *testing.T) {
	data, err := yaml.Marshal(chain().Serving)
	require.NoError(t, err)
	obj, err := DecodeCertManager(data)
	require.NoError(t, err)
	assert.IsType(t, &cmapi.Certificate{}, obj)

	_, err = DecodeCertManager([]byte("apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\nspec: {secretName: s, dnsName: [a]}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dnsName", "a misspelled field is an error, not dropped")
}

func TestCheckServingCertificateStandsAlone(t *testing.T) {
	c := chain()
	require.NoError(t, CheckServingCertificate(c.Serving, service))
	c.Serving.Namespace = "elsewhere"
	assert.ErrorContains(t, CheckServingCertificate(c.Serving, service), `namespace "elsewhere"`)
}
