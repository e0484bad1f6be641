package native

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/environment"

	"github.com/ha-injector/ha-injector/policies"
)

// TestPoliciesCompile compiles every expression of both admission policies as
// the API server does when it loads them (a MutatingAdmissionPolicy has no
// status: an expression that does not compile would only show when a pod is
// admitted, unchanged).
func TestPoliciesCompile(t *testing.T) {
	o := Options{Name: "ha-injector", Settings: policies.NativeSettings{
		SysctlImage: "registry.example/ha-injector:v1", AllowedSysctlImages: []string{"registry.example/tools"},
		PodSecurity: policies.PodSecurityDefault{Level: "baseline", Version: "v1.30"},
	}}
	opts := plugincel.OptionalVariableDeclarations{HasParams: true, HasAuthorizer: true}

	m := MutatingPolicy(o)
	c, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	require.NoError(t, err)
	for _, v := range m.Spec.Variables {
		res := c.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, opts, environment.StoredExpressions)
		assert.Nil(t, res.Error, "variable %s:\n%s", v.Name, v.Expression)
	}
	for _, mc := range m.Spec.MatchConditions {
		res := c.Compiler.CompileCELExpression(&validating.ValidationCondition{Expression: mc.Expression}, opts, environment.StoredExpressions)
		assert.Nil(t, res.Error, "match condition %s", mc.Name)
	}
	patchOpts := opts
	patchOpts.HasPatchTypes = true
	ev := c.CompileMutatingEvaluator(&patch.JSONPatchCondition{Expression: m.Spec.Mutations[0].JSONPatch.Expression}, patchOpts, environment.StoredExpressions)
	for _, err := range ev.CompilationErrors() {
		assert.NoError(t, err, "the mutation")
	}

	v := ValidatingPolicy(o)
	vc, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	require.NoError(t, err)
	for _, x := range v.Spec.Variables {
		res := vc.CompileAndStoreVariable(&validating.Variable{Name: x.Name, Expression: x.Expression}, opts, environment.StoredExpressions)
		assert.Nil(t, res.Error, "variable %s", x.Name)
	}
	for _, val := range v.Spec.Validations {
		res := vc.Compiler.CompileCELExpression(&validating.ValidationCondition{Expression: val.Expression}, opts, environment.StoredExpressions)
		assert.Nil(t, res.Error, "validation %s", val.Expression)
		res = vc.Compiler.CompileCELExpression(&validating.MessageExpressionCondition{MessageExpression: val.MessageExpression}, opts, environment.StoredExpressions)
		assert.Nil(t, res.Error, "message %s", val.MessageExpression)
	}
}
