package patch

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// TestLeafDiffIsCreatePatch holds the typed comparison of lists, flat structs
// and string maps to what jsonpatch.CreatePatch gives for their JSON: the
// same operations (paths, kinds and values as JSON), for random pairs of
// toleration and sysctl lists and annotation maps.
func TestLeafDiffIsCreatePatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
	toleration := func() corev1.Toleration {
		tol := corev1.Toleration{
			Key:      pick("", "node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready", "a/b~c"),
			Operator: corev1.TolerationOperator(pick("", "Exists", "Equal")),
			Value:    pick("", "v"),
			Effect:   corev1.TaintEffect(pick("", "NoExecute", "NoSchedule")),
		}
		if rng.IntN(3) > 0 {
			tol.TolerationSeconds = ptr.To(int64(rng.IntN(3) * 30))
		}
		return tol
	}
	tolerations := func() []corev1.Toleration {
		out := []corev1.Toleration{}
		for range rng.IntN(4) {
			out = append(out, toleration())
		}
		return out
	}
	sysctls := func() []corev1.Sysctl {
		out := []corev1.Sysctl{}
		for range rng.IntN(3) {
			out = append(out, corev1.Sysctl{Name: pick("net.ipv4.tcp_retries2", "net.ipv4.tcp_keepalive_time"), Value: pick("", "9", "30")})
		}
		return out
	}
	annotations := func() map[string]string {
		out := map[string]string{}
		for range rng.IntN(3) {
			out[pick("ha-injector.io/status", "x/y", "z")] = pick("", "1", "2")
		}
		return out
	}
	for i := range 3000 {
		var b, a any
		switch i % 3 {
		case 0:
			b, a = tolerations(), tolerations()
		case 1:
			b, a = sysctls(), sysctls()
		case 2:
			b, a = annotations(), annotations()
		}
		got, err := leafDiff("/p", b, a)
		require.NoError(t, err)
		bj, err := json.Marshal(b)
		require.NoError(t, err)
		aj, err := json.Marshal(a)
		require.NoError(t, err)
		want, err := jsonpatch.CreatePatch(bj, aj)
		require.NoError(t, err)
		for i := range want {
			want[i].Path = "/p" + want[i].Path
		}
		if !assert.Equal(t, normalized(t, want), normalized(t, got), "%s -> %s", bj, aj) {
			return
		}
	}
}

// normalized is ops as sorted JSON strings, values as JSON gives them back.
func normalized(t *testing.T, ops []jsonpatch.Operation) []string {
	t.Helper()
	out := make([]string, len(ops))
	for i, op := range ops {
		b, err := json.Marshal(op)
		require.NoError(t, err)
		var v any
		require.NoError(t, json.Unmarshal(b, &v))
		b, err = json.Marshal(v)
		require.NoError(t, err)
		out[i] = string(b)
	}
	sort.Strings(out)
	return out
}

func TestFlatFields(t *testing.T) {
	assert.Len(t, flatFields(reflect.TypeFor[corev1.Toleration]()), 5)
	assert.Len(t, flatFields(reflect.TypeFor[corev1.Sysctl]()), 2)
	assert.Nil(t, flatFields(reflect.TypeFor[corev1.Container]()), "a container holds lists and structs")
	assert.Nil(t, flatFields(reflect.TypeFor[string]()))
}
