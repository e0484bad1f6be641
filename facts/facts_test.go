package facts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

func cluster(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	base := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: map[string]string{policies.PolicyLabel: "strict"}}},
		&v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "strict", UID: "uid-strict", ResourceVersion: "1"},
			Spec: v1alpha1.HAPolicySpec{AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{corev1.LabelHostname: "a"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{corev1.LabelHostname: "b"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cp", Labels: map[string]string{corev1.LabelHostname: "cp", facts.ControlPlaneLabel: ""}}},
	}
	return fake.NewClientBuilder().WithScheme(scheme()).WithObjects(append(base, objs...)...).Build()
}

func pod(owner *metav1.OwnerReference) *policies.Object {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "p", Labels: map[string]string{"app": "db"}}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	o, err := policies.ObjectOf(p)
	if err != nil {
		panic(err)
	}
	return o
}

// TestGatherAPodsContext: the namespace, its policy, the pod's controller and, for a
// Required policy, the number of nodes that run workloads.
func TestGatherAPodsContext(t *testing.T) {
	c := cluster(t,
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "db"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web-1", Annotations: map[string]string{
			policies.DesiredReplicasAnnotation: "4", policies.InjectAnnotation: "false"}}},
	)
	g := &facts.Gatherer{Source: &facts.Reader{Cache: c, API: c}, Settings: facts.Settings{SysctlImage: "img:1"}}
	ctx := context.Background()
	ns, err := g.Namespace(ctx, "team")
	require.NoError(t, err)
	assert.Equal(t, "strict", ns.PolicyName)
	policy, err := g.Policy(ctx, ns)
	require.NoError(t, err)
	require.NotNil(t, policy)

	pctx, err := g.Context(ctx, ns, policy, pod(&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", Controller: ptr.To(true)}), nil)
	require.NoError(t, err)
	assert.Equal(t, &policies.Owner{Kind: "StatefulSet", Name: "db", Replicas: ptr.To[int32](3)}, pctx.Owner)
	assert.Equal(t, map[string]int{corev1.LabelHostname: 2, corev1.LabelTopologyZone: 0}, pctx.Cluster.TopologyDomains,
		"control-plane nodes do not count; the zone spread asks for the zones, which no node names here")
	assert.Equal(t, "img:1", pctx.SysctlImage)

	pctx, err = g.Context(ctx, ns, policy, pod(&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-1", Controller: ptr.To(true)}), nil)
	require.NoError(t, err)
	assert.Equal(t, &policies.Owner{Kind: "ReplicaSet", Name: "web-1", Replicas: ptr.To[int32](4), Annotations: map[string]string{policies.InjectAnnotation: "false"}}, pctx.Owner)

	// A Job's pod: its replicas are not read, so no domains are needed.
	var unknown []string
	g.Unknown = func(_ context.Context, what string, _ error) { unknown = append(unknown, what) }
	pctx, err = g.Context(ctx, ns, policy, pod(&metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: "report", Controller: ptr.To(true)}), nil)
	require.NoError(t, err)
	assert.Nil(t, pctx.Owner)
	assert.NotContains(t, pctx.Cluster.TopologyDomains, corev1.LabelHostname, "a pod whose replicas are unknown gets Preferred: no node count needed")
	// A StatefulSet that is not there is unknown, and said so.
	pctx, err = g.Context(ctx, ns, policy, pod(&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "gone", Controller: ptr.To(true)}), nil)
	require.NoError(t, err)
	assert.Nil(t, pctx.Owner)
	assert.Equal(t, []string{"StatefulSet gone, the pod's controller"}, unknown)
}

func TestPolicyErrors(t *testing.T) {
	c := cluster(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "typo", Labels: map[string]string{policies.PolicyLabel: "strcit"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Labels: map[string]string{policies.PolicyLabel: "broken"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
		&v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "broken", UID: "uid-broken", ResourceVersion: "1"},
			Spec: v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{Values: map[string]v1alpha1.SysctlValue{"vm.swappiness": "1"}}}},
	)
	g := &facts.Gatherer{Source: &facts.Reader{Cache: c, API: c}}
	ctx := context.Background()
	policyOf := func(name string) (*v1alpha1.HAPolicy, error) {
		ns, err := g.Namespace(ctx, name)
		require.NoError(t, err)
		return g.Policy(ctx, ns)
	}
	p, err := policyOf("plain")
	assert.NoError(t, err)
	assert.Nil(t, p, "not opted in")

	_, err = policyOf("typo")
	var perr *facts.PolicyError
	require.True(t, errors.As(err, &perr))
	assert.Equal(t, "strcit", perr.Name)
	assert.True(t, apierrors.IsNotFound(perr.Err))

	_, err = policyOf("legacy")
	var invalid *policies.InvalidPolicyError
	require.True(t, errors.As(err, &invalid), "%v", err)
	assert.Contains(t, invalid.Summary(), "vm.swappiness")

	_, err = g.Namespace(ctx, "")
	assert.Error(t, err)
}

// TestStaticSourceAndMemo: offline preview's source answers from what it was given;
// Memo reads each fact once.
func TestStaticSourceAndMemo(t *testing.T) {
	policy := v1alpha1.NewDefault()
	src := &counting{Source: facts.Static{Labels: map[string]string{"x": "y"}, Policy: policy, TopologyDomains: map[string]int{"zone": 3}}.Source()}
	m := facts.Memo(src)
	ctx := context.Background()
	for range 3 {
		labels, err := m.NamespaceLabels(ctx, "any")
		require.NoError(t, err)
		assert.Equal(t, "y", labels["x"])
		p, err := m.Policy(ctx, "default")
		require.NoError(t, err)
		assert.Same(t, policy, p)
		n, known, err := m.TopologyDomains(ctx, "zone")
		require.NoError(t, err)
		assert.True(t, known)
		assert.Equal(t, 3, n)
		_, known, _ = m.TopologyDomains(ctx, "rack")
		assert.False(t, known, "a key not given is unknown")
	}
	assert.Equal(t, 4, src.reads, "one read of each")
	_, err := m.Policy(ctx, "other")
	assert.Error(t, err)
}

type counting struct {
	facts.Source
	reads int
}

func (c *counting) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	c.reads++
	return c.Source.NamespaceLabels(ctx, name)
}

func (c *counting) Policy(ctx context.Context, name string) (*v1alpha1.HAPolicy, error) {
	c.reads++
	return c.Source.Policy(ctx, name)
}

func (c *counting) TopologyDomains(ctx context.Context, key string) (int, bool, error) {
	c.reads++
	return c.Source.TopologyDomains(ctx, key)
}
