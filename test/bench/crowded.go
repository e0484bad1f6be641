package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/webhook"
)

// The namespaces of the crowded-UPDATE scenario: one holding sizes.CrowdedReplicaSets
// ReplicaSets, one holding only the Deployment's own.
const (
	crowdedNamespace = "crowded"
	sparseNamespace  = "sparse"
	// crowdedDeployment owns crowdedRevisions ReplicaSets in each, under the same UID.
	crowdedDeployment = "checkout"
	crowdedRevisions  = 10
	crowdedUID        = types.UID("c7a1e0d4-0000-4000-8000-00000000c0de")
)

// fillCrowded creates both namespaces (opted in to the default policy) and their
// ReplicaSets, each as the Deployment controller stores it, with its whole template:
// in crowdedNamespace, the Deployment's own 10 revisions and those of
// CrowdedReplicaSets/10 - 1 other Deployments; in sparseNamespace, the 10 only.
func fillCrowded(ctx context.Context, c client.Client, sizes Sizes) error {
	for _, ns := range []string{crowdedNamespace, sparseNamespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policies.PolicyLabel: "default"}}}); err != nil {
			return err
		}
	}
	revision := func(ns, app string, uid types.UID, rev int) *appsv1.ReplicaSet {
		rs := replicaSet(ns, app, fmt.Sprintf("%s%04d", "r", rev), "default", rev)
		rs.OwnerReferences[0].UID = uid
		rs.Annotations["deployment.kubernetes.io/revision"] = strconv.Itoa(rev)
		return rs
	}
	return createAll(ctx, c, func(objs chan<- client.Object) {
		for _, ns := range []string{crowdedNamespace, sparseNamespace} {
			for rev := 1; rev <= crowdedRevisions; rev++ {
				objs <- revision(ns, crowdedDeployment, crowdedUID, rev)
			}
		}
		for d := 1; d < sizes.CrowdedReplicaSets/crowdedRevisions; d++ {
			app := fmt.Sprintf("svc-%04d", d)
			uid := types.UID(fmt.Sprintf("c7a1e0d4-0000-4000-8000-%012d", d))
			for rev := 1; rev <= crowdedRevisions; rev++ {
				objs <- revision(crowdedNamespace, app, uid, rev)
			}
		}
	})
}

// imageBumpReview is the Deployment UPDATE that a new release sends (Helm, Argo CD,
// kubectl set image): the injected, stored Deployment with a new image, so the pod
// template changes and the webhook looks for a rollback among the Deployment's
// ReplicaSets. The stored one comes from ours' answer to its CREATE.
func imageBumpReview(ctx context.Context, s *servers, ours *server, ns string) (loadgen.Request, error) {
	hc, err := loadgen.NewClient(s.ca, 1)
	if err != nil {
		return loadgen.Request{}, err
	}
	defer hc.CloseIdleConnections()
	manifest := defaulted(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: crowdedDeployment, Labels: map[string]string{"app": crowdedDeployment}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": crowdedDeployment}},
			Template: podTemplate(crowdedDeployment),
		},
	})
	create, err := encodeReview("c7a1e0d4-create", deploymentKind, admissionv1.Create, gitOpsController, manifest, nil)
	if err != nil {
		return loadgen.Request{}, err
	}
	answer, err := loadgen.Answer(ctx, hc, ours.url+create.Path, create.Body)
	if err != nil {
		return loadgen.Request{}, err
	}
	raw, err := json.Marshal(manifest)
	if err != nil {
		return loadgen.Request{}, err
	}
	if len(answer.Patch) > 0 {
		patch, err := jsonpatch.DecodePatch(answer.Patch)
		if err != nil {
			return loadgen.Request{}, err
		}
		if raw, err = patch.Apply(raw); err != nil {
			return loadgen.Request{}, err
		}
	}
	stored := &appsv1.Deployment{}
	if err := json.Unmarshal(raw, stored); err != nil {
		return loadgen.Request{}, err
	}
	stored.UID, stored.ResourceVersion, stored.Generation = crowdedUID, "9001", crowdedRevisions
	bumped := stored.DeepCopy()
	bumped.Spec.Template.Spec.Containers[0].Image += "-next"
	return encodeReview("c7a1e0d4-update", deploymentKind, admissionv1.Update, gitOpsController, bumped, stored)
}

// crowdedUpdate sends the image bump, one at a time, in the crowded namespace and in the
// sparse one, alternating rounds, and reports its latency and what serve allocates for
// one (the delta of the Go runtime's cumulative counter): a namespace's other
// ReplicaSets must cost nothing, and one UPDATE must stay within the large-request
// budget, the memory serve sets aside for large requests.
func (s *servers) crowdedUpdate(ctx context.Context, sizes Sizes, step func(string, ...any), ours *server) ([]Row, error) {
	crowded, err := imageBumpReview(ctx, s, ours, crowdedNamespace)
	if err != nil {
		return nil, fmt.Errorf("the crowded namespace's UPDATE: %w", err)
	}
	sparse, err := imageBumpReview(ctx, s, ours, sparseNamespace)
	if err != nil {
		return nil, fmt.Errorf("the sparse namespace's UPDATE: %w", err)
	}
	step("Deployment UPDATE changing the template, in a namespace of %d ReplicaSets and in one of %d: %d rounds of %d each, alternating",
		sizes.CrowdedReplicaSets, crowdedRevisions, sizes.Rounds, sizes.CrowdedUpdates)
	var crowdedRuns, sparseRuns []loadgen.Result
	var crowdedAlloc, sparseAlloc []float64
	for range sizes.Rounds {
		for _, side := range []struct {
			req   loadgen.Request
			runs  *[]loadgen.Result
			alloc *[]float64
		}{{crowded, &crowdedRuns, &crowdedAlloc}, {sparse, &sparseRuns, &sparseAlloc}} {
			before, err := goMetric(ours.metrics, allocatedMetric)
			if err != nil {
				return nil, err
			}
			res, err := loadgen.Run(ctx, loadgen.Config{BaseURL: ours.url, CA: s.ca, Concurrency: 1, Requests: sizes.CrowdedUpdates, Mix: []loadgen.Request{side.req}})
			if err != nil {
				return nil, err
			}
			if res.Errors > 0 {
				return nil, fmt.Errorf("%d of %d UPDATEs failed: %v", res.Errors, res.Sent, res.FirstErr)
			}
			after, err := goMetric(ours.metrics, allocatedMetric)
			if err != nil {
				return nil, err
			}
			*side.runs = append(*side.runs, res)
			*side.alloc = append(*side.alloc, (after-before)/float64(res.Sent))
		}
	}
	scenario := fmt.Sprintf("deployment UPDATE changing the template (an image bump), one at a time, namespace of %d ReplicaSets (baseline: a namespace of its own %d)", sizes.CrowdedReplicaSets, crowdedRevisions)
	p := pair{ours: crowdedRuns, noop: sparseRuns}
	rows := latencyRows(scenario, p, 50, 99)
	oursAlloc, sparseMedian := medianOf(crowdedAlloc)/mib, medianOf(sparseAlloc)/mib
	budget := float64(webhook.DefaultLargeRequestBudget) / mib
	return append(rows,
		row(scenario, "heap allocated per UPDATE", "MiB", oursAlloc, &sparseMedian).
			target(fmt.Sprintf("<= %.0f (the large-request budget)", budget), oursAlloc <= budget),
		failedRow(scenario, p),
	), nil
}

// medianOf is the median of xs, as median takes it.
func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Sorted(slices.Values(xs))[len(xs)/2]
}
