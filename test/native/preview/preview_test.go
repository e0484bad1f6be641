// Package preview_test checks preview --cluster against a native installation, on an
// API server of its own: preview finds the one MutatingAdmissionPolicy that takes
// HAPolicies, which the other native tests install many of.
package preview_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// workloads are the documents previewed: a 3-replica Deployment, a 1-replica one (the
// webhook skips it; native mode, which cannot read the replica count, does not), a
// StatefulSet and a bare pod.
const workloads = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: single}
spec:
  replicas: 1
  selector: {matchLabels: {app: single}}
  template:
    metadata: {labels: {app: single}}
    spec: {containers: [{name: app, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: app, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, labels: {app: bare}}
spec: {containers: [{name: app, image: registry.k8s.io/pause:3.10}]}
`

// TestPreviewClusterNative: preview --cluster finds a native installation (no webhook
// configuration), says so, and shows each pod as the API server then stores it: the
// same injections and the same record, with the zone count of the HAPolicy's status.
func TestPreviewClusterNative(t *testing.T) {
	cfg := testenv.Start(t)
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()

	o := native.Options{Name: "previewed", Settings: policies.NativeSettings{SysctlImage: "registry.example/ha-injector:v5"}}
	for name, zones := range map[string]int32{"three-zones": 3, "one-zone": 1} {
		p := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
		require.NoError(t, c.Create(ctx, p))
		p.Status = v1alpha1.HAPolicyStatus{TopologyDomains: map[string]int32{corev1.LabelTopologyZone: zones}, ObservedGeneration: p.Generation}
		require.NoError(t, c.Status().Update(ctx, p))
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{policies.PolicyLabel: name}}}))
	}
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}))
	for _, obj := range native.Objects(o, []string{"three-zones", "one-zone"}) {
		require.NoError(t, c.Create(ctx, obj))
	}
	file := filepath.Join(t.TempDir(), "workloads.yaml")
	require.NoError(t, os.WriteFile(file, []byte(workloads), 0o600))

	for _, ns := range []string{"three-zones", "one-zone"} {
		t.Run(ns, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			require.NoError(t, preview.Run(ctx, preview.Options{
				Files: []string{file}, Pods: true, Output: manifest.YAML,
				Cluster: &preview.ClusterOptions{RestConfig: cfg, Namespace: ns, DefaultSysctlImage: "registry.example/not-this:v0"},
			}, false, nil, &stdout, &stderr))
			first, _, _ := strings.Cut(stderr.String(), "\n")
			assert.Equal(t, "admission mode: native (MutatingAdmissionPolicy previewed found): Deployments are stored as they are and their pods injected by the API server at creation", first)

			var pods []*corev1.Pod
			dec := yaml.NewYAMLOrJSONDecoder(&stdout, 4096)
			for {
				var head struct {
					Kind     string `json:"kind"`
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
				}
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					break
				}
				require.NoError(t, json.Unmarshal(raw, &head))
				if head.Kind == "Deployment" {
					assert.NotContains(t, string(raw), policies.StatusAnnotation, "native mode stores Deployments as they are")
				}
				if head.Kind != "Pod" {
					continue
				}
				pod := &corev1.Pod{}
				require.NoError(t, json.Unmarshal(raw, pod))
				pods = append(pods, pod)
			}
			require.Len(t, pods, 4, "a pod of each workload, and the bare pod:\n%s", stderr.String())

			for i, want := range pods {
				// What preview shows, as the API server stores it with its defaults
				// where nothing applies; against what the API server makes of the pod
				// its controller sends.
				sent := sentPods(t)[i]
				shown, err := admit(ctx, c, want, "plain")
				require.NoError(t, err)
				var got *corev1.Pod
				require.Eventually(t, func() bool {
					got, err = admit(ctx, c, sent, ns)
					require.NoError(t, err)
					return got.Annotations[policies.StatusAnnotation] != ""
				}, 30*time.Second, 100*time.Millisecond, "the bindings take effect")
				name := want.Name + want.GenerateName
				assert.Equal(t, shown.Annotations[policies.StatusAnnotation], got.Annotations[policies.StatusAnnotation], "%s: the record", name)
				assert.True(t, equality.Semantic.DeepEqual(shown.Spec.Affinity, got.Spec.Affinity), "%s: affinity\n%v\n%v", name, shown.Spec.Affinity, got.Spec.Affinity)
				assert.Equal(t, shown.Spec.TopologySpreadConstraints, got.Spec.TopologySpreadConstraints, "%s: topology spread", name)
				assert.Equal(t, shown.Spec.Tolerations, got.Spec.Tolerations, "%s: tolerations", name)
				assert.Equal(t, shown.Spec.SecurityContext, got.Spec.SecurityContext, "%s: securityContext", name)
				assert.Equal(t, shown.Spec.InitContainers, got.Spec.InitContainers, "%s: init containers", name)
				if ns == "one-zone" {
					assert.Empty(t, got.Spec.TopologySpreadConstraints, "%s: one zone in the status: no zone spread", name)
				} else {
					assert.Len(t, got.Spec.TopologySpreadConstraints, 1, name)
				}
			}
			assert.Contains(t, stderr.String(), "Deployment single: antiAffinity: applied: its pods: Preferred", "native mode cannot read the replica count")
		})
	}
}

// sentPods are the pods of workloads as their controllers send them (preview.PodOf),
// and the bare pod as it is, in the order preview prints them.
func sentPods(t *testing.T) []*corev1.Pod {
	var out []*corev1.Pod
	for _, doc := range strings.Split(workloads, "\n---\n") {
		js, err := yaml.ToJSON([]byte(doc))
		require.NoError(t, err)
		pod, _, ok, err := preview.PodOf(js)
		require.NoError(t, err)
		if !ok {
			pod = &corev1.Pod{}
			require.NoError(t, json.Unmarshal(js, pod))
		}
		out = append(out, pod)
	}
	return out
}

// admit creates pod in ns as a dry run and returns it as the API server would store it.
func admit(ctx context.Context, c client.Client, pod *corev1.Pod, ns string) (*corev1.Pod, error) {
	p := pod.DeepCopy()
	p.Namespace = ns
	p.ResourceVersion, p.UID, p.CreationTimestamp = "", "", metav1.Time{}
	for i := range p.OwnerReferences {
		p.OwnerReferences[i].UID = "5d1c0d0e-0000-4000-8000-000000000001" // the API server wants one
	}
	if err := c.Create(ctx, p, client.DryRunAll); err != nil {
		return nil, err
	}
	return p, nil
}
