package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// apiFloorNS is served by floorPolicy: the webhook's injections for the benchmark's pod,
// as one constant JSON patch.
const apiFloorNS = "pods-native-floor"

// floorPolicy is the name of the floor's MutatingAdmissionPolicy and its binding.
const floorPolicy = "ha-injector-bench-floor"

// The scenarios of the floor's rows.
const (
	FloorScenario            = "pod creation through kube-apiserver, native floor: the webhook's injections as one constant JSON patch (baseline: webhook)"
	FloorNoAdmissionScenario = "pod creation through kube-apiserver, native floor: the webhook's injections as one constant JSON patch (baseline: no admission)"
)

// installFloor installs a floor for what a MutatingAdmissionPolicy doing native mode's
// work for the benchmark's pods costs, the answer with no work to find it: no
// parameters, variables or match conditions, no reinvocation, one JSON patch whose values are constants, those of the pod the webhook
// (opted in through webhookNS, which must be effective) returns for benchPod on a dry
// run. Every pod of the benchmark is the same, so the constants are the right answer for
// each; native mode computes the same answer from the pod, its namespace and the policy.
// It waits (bounded) until the policy takes effect in apiFloorNS.
func installFloor(ctx context.Context, c client.Client, webhookNS string) error {
	reference := benchPod(webhookNS, "floor-reference")
	if err := c.Create(ctx, reference, client.DryRunAll); err != nil {
		return err
	}
	if reference.Annotations[policies.StatusAnnotation] == "" {
		return fmt.Errorf("the webhook did not inject the floor's reference pod in %s", webhookNS)
	}
	expr, err := constantPatch(reference)
	if err != nil {
		return err
	}
	policy := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: floorPolicy},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}}},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: expr},
			}},
			FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: floorPolicy},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: floorPolicy,
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: apiFloorNS},
			}},
		},
	}
	for _, obj := range []client.Object{policy, binding, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apiFloorNS}}} {
		if err := c.Create(ctx, obj); err != nil {
			return err
		}
	}
	if err := localwebhook.WaitEffective(ctx, c, apiFloorNS, 30*time.Second); err != nil {
		return fmt.Errorf("native mode's floor in %s: %w", apiFloorNS, err)
	}
	return nil
}

// constantPatch is a CEL JSON patch that sets, on any pod, the parts the webhook
// injected into reference (each part whole: "add" replaces a member that exists) and its
// annotations. The values are CEL literals of their JSON (celLiteral).
func constantPatch(reference *corev1.Pod) (string, error) {
	ops := []struct {
		path  string
		value any
	}{
		{"/metadata/annotations", reference.Annotations},
		{"/spec/tolerations", reference.Spec.Tolerations},
		{"/spec/affinity", reference.Spec.Affinity},
		{"/spec/securityContext", reference.Spec.SecurityContext},
		{"/spec/initContainers", reference.Spec.InitContainers},
		{"/spec/topologySpreadConstraints", reference.Spec.TopologySpreadConstraints},
	}
	var b strings.Builder
	b.WriteString("[")
	for _, op := range ops {
		data, err := json.Marshal(op.value)
		if err != nil {
			return "", err
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return "", err
		}
		if v == nil {
			continue // not injected (the zone spread on a cluster without zones)
		}
		if b.Len() > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "JSONPatch{op: 'add', path: '%s', value: ", op.path)
		if err := celLiteral(&b, v); err != nil {
			return "", err
		}
		b.WriteString("}")
	}
	b.WriteString("]")
	return b.String(), nil
}

// celLiteral writes v, a decoded JSON value, as a CEL literal. The API server's CEL
// wants the values of one map or list literal to have one type, so each is wrapped in
// dyn(); a JSON string is a CEL string literal with the same escapes.
func celLiteral(b *strings.Builder, v any) error {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			key, _ := json.Marshal(k)
			b.Write(key)
			b.WriteString(": dyn(")
			if err := celLiteral(b, v[k]); err != nil {
				return err
			}
			b.WriteString(")")
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[")
		for i, e := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("dyn(")
			if err := celLiteral(b, e); err != nil {
				return err
			}
			b.WriteString(")")
		}
		b.WriteString("]")
	case string:
		s, _ := json.Marshal(v)
		b.Write(s)
	case float64:
		if v != float64(int64(v)) {
			return fmt.Errorf("celLiteral: %v is not an integer", v)
		}
		fmt.Fprintf(b, "%d", int64(v))
	case bool:
		fmt.Fprintf(b, "%t", v)
	case nil:
		b.WriteString("null")
	default:
		return fmt.Errorf("celLiteral: a %T", v)
	}
	return nil
}
