package policies_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// decodeTyped decodes a Pod or Deployment document into its Go type.
func decodeTyped(t *testing.T, doc []byte) runtime.Object {
	t.Helper()
	var tm metav1.TypeMeta
	require.NoError(t, json.Unmarshal(doc, &tm))
	var obj runtime.Object
	switch tm.Kind {
	case "Pod":
		obj = &corev1.Pod{}
	case "Deployment":
		obj = &appsv1.Deployment{}
	default:
		t.Fatalf("unexpected kind %q", tm.Kind)
	}
	require.NoError(t, json.Unmarshal(doc, obj))
	return obj
}

func decodeDeployment(t *testing.T, doc []byte) *appsv1.Deployment {
	t.Helper()
	d, ok := decodeTyped(t, doc).(*appsv1.Deployment)
	require.True(t, ok)
	return d
}
