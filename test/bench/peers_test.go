package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// expectedInjections are what ha-injector's "peers" HAPolicy (the defaults, keepalive
// sysctls only) does to the benchmark's Pod (labels app=web-server, the 300 s
// tolerations of DefaultTolerationSeconds): written out here, not taken from ours'
// answer, so that ours is held to them as much as the peers are held to ours.
func expectedInjections() Injections {
	return Injections{
		Tolerations: []corev1.Toleration{
			{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](60)},
			{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
		},
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web-server"}},
					TopologyKey:    "kubernetes.io/hostname",
					MatchLabelKeys: []string{"pod-template-hash"},
				},
			}},
		}},
		Sysctls: []corev1.Sysctl{
			{Name: "net.ipv4.tcp_keepalive_intvl", Value: "30"},
			{Name: "net.ipv4.tcp_keepalive_probes", Value: "5"},
			{Name: "net.ipv4.tcp_keepalive_time", Value: "30"},
		},
	}
}

// TestShortPeers runs the peers benchmark with little load: ha-injector, the no-op, the
// minimal mutating webhook and Kyverno (with each of its two policies) start, admit the
// same Pod CREATE over TLS and pods created through kube-apiserver, mutate them equally,
// and stop. Kyverno runs where hack/kyverno.sh has built it (a cold build is several GB
// and would double make test); its checks say they were skipped otherwise. No timing is
// asserted.
func TestShortPeers(t *testing.T) {
	ctrllog.SetLogger(logr.Discard())
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	kyverno, notBuilt := KyvernoBuild(root, false)
	if notBuilt != nil && !errors.Is(notBuilt, ErrKyvernoNotBuilt) {
		require.NoError(t, notBuilt)
	}
	var log bytes.Buffer
	res, err := RunPeers(context.Background(), PeersShort, &log, PeerOptions{Kyverno: kyverno})
	require.NoError(t, err, log.String())

	find := func(t *testing.T, scenarioPrefix, scenarioSuffix, metric string) Row {
		t.Helper()
		for _, r := range res.Rows {
			if strings.HasPrefix(r.Scenario, scenarioPrefix) && strings.HasSuffix(r.Scenario, scenarioSuffix) && r.Metric == metric {
				return r
			}
		}
		t.Fatalf("no row %q ... %q / %q in:\n%s", scenarioPrefix, scenarioSuffix, metric, log.String())
		return Row{}
	}
	met := func(t *testing.T, r Row) {
		t.Helper()
		if assert.NotNil(t, r.Met, "%s: %s", r.Scenario, r.Metric) {
			baseline := "none"
			if r.Baseline != nil {
				baseline = fmt.Sprint(*r.Baseline)
			}
			assert.True(t, *r.Met, "%s: %s: ours %v, baseline %s, target %s", r.Scenario, r.Metric, r.Ours, baseline, r.Target)
		}
	}
	compared := func(t *testing.T, r Row, target string) {
		t.Helper()
		assert.Positive(t, r.Ours, "%s: %s", r.Scenario, r.Metric)
		if assert.NotNil(t, r.Baseline, "%s: %s", r.Scenario, r.Metric) {
			assert.Positive(t, *r.Baseline, "%s: %s", r.Scenario, r.Metric)
		}
		assert.NotNil(t, r.Ratio, "%s: %s", r.Scenario, r.Metric)
		assert.Equal(t, target, r.Target, "%s: %s", r.Scenario, r.Metric)
	}

	want := expectedInjections()
	assert.Equal(t, want.String(), res.Answered["ours"].String(), "ours' answer over TLS")
	assert.Equal(t, want.String(), res.Stored["ours"].String(), "ours' pod stored through kube-apiserver")

	// checkPeer holds a mutating peer to ours: what its answer over TLS and its pods
	// stored through kube-apiserver carry, and the rows that say so; and checks that it
	// answered every request.
	checkPeer := func(t *testing.T, name string, parts Parts, minThroughput, maxP99 string) {
		assert.Equal(t, parts, res.Compared[name])
		assert.Equal(t, want.Only(parts).String(), res.Answered[name].Only(parts).String(), "%s's answer over TLS (%s)", name, parts)
		assert.Equal(t, want.Only(parts).String(), res.Stored[name].Only(parts).String(), "%s's pod stored through kube-apiserver (%s)", name, parts)
		suffix := "(baseline: " + name + ")"
		compared(t, find(t, "pod CREATE over TLS, 2 connections, as fast as answered", suffix, "throughput"), minThroughput)
		compared(t, find(t, "pod CREATE over TLS, 2 connections, as fast as answered", suffix, "CPU time per request"), "")
		compared(t, find(t, "pod CREATE over TLS, 2 connections, as fast as answered", suffix, "CPU time of the load generator per request"), "")
		compared(t, find(t, "pod CREATE over TLS, all runs", suffix, "JSON patch in the answer"), "")
		compared(t, find(t, "pod CREATE over TLS, fixed", suffix, "p99 latency"), maxP99)
		failed := find(t, "pod CREATE over TLS, all runs", suffix, "failed requests")
		assert.Zero(t, failed.Ours, name)
		if assert.NotNil(t, failed.Baseline) {
			assert.Zero(t, *failed.Baseline, "%s answered every request", name)
		}
		met(t, failed)
		met(t, find(t, "pod CREATE over TLS, all runs", suffix, "answer injects what ours does ("+parts.String()+"; 1 = yes)"))
		compared(t, find(t, "pod creation through kube-apiserver", suffix, "throughput"), "")
		met(t, find(t, "pod creation through kube-apiserver", suffix, "opted-in pods stored without ours' status record"))
		met(t, find(t, "pod creation through kube-apiserver", suffix, "pods stored with injections that differ from ours' ("+parts.String()+")"))
	}

	t.Run("no admission and the no-op webhook", func(t *testing.T) {
		for _, name := range []string{"no admission", "no-op webhook"} {
			suffix := "(baseline: " + name + ")"
			compared(t, find(t, "pod creation through kube-apiserver", suffix, "throughput"), "")
			met(t, find(t, "pod creation through kube-apiserver", suffix, "opted-in pods stored without ours' status record"))
		}
	})
	t.Run("minimal mutating webhook", func(t *testing.T) {
		checkPeer(t, "minimal mutating webhook", TolerationsOnly, ">= 1", "")
	})
	t.Run("native mode", func(t *testing.T) {
		assert.Equal(t, want.String(), res.Stored["native"].String(), "native mode's pod stored through kube-apiserver")
		check := func(t *testing.T, name string, parts Parts) {
			t.Helper()
			prefix, suffix := "pod creation through kube-apiserver, native, ", "(baseline: "+name+")"
			compared(t, find(t, prefix, suffix, "throughput"), "")
			compared(t, find(t, prefix, suffix, "p99 latency"), "")
			met(t, find(t, prefix, suffix, "opted-in pods stored without native mode's record"))
			met(t, find(t, prefix, suffix, fmt.Sprintf("pods stored with injections that differ from ours' webhook's (native mode: %s; the peer: %s)", AllParts, parts)))
		}
		check(t, "minimal mutating webhook", TolerationsOnly)
		if kyverno == "" {
			t.Skipf("next to Kyverno's MutatingPolicy not checked: %v; make test checks it once it is built", notBuilt)
		}
		check(t, kyvernoName(kyvernoForms[0]), AllParts)
	})
	for _, form := range kyvernoForms {
		t.Run(kyvernoName(form), func(t *testing.T) {
			if kyverno == "" {
				t.Skipf("not checked: %v; make test checks it once it is built", notBuilt)
			}
			checkPeer(t, kyvernoName(form), AllParts, ">= 3", "<= 1")
			name := kyvernoName(form)
			if diffs, ok := res.ShapesDiffer[name]; assert.True(t, ok, "%s was sent the other pod shapes", name) {
				assert.Empty(t, diffs, "pod shapes on which %s does not inject what ours does", name)
			}
			met(t, find(t, "pod CREATE over TLS, all runs", "(baseline: "+name+")", fmt.Sprintf("of %d other pod shapes, answered with ours' injections", len(podShapes))))
		})
	}

	var table bytes.Buffer
	require.NoError(t, Print(&table, res.Rows))
	assert.Equal(t, len(res.Rows)+1, strings.Count(table.String(), "\n"), "a header and a line per row")
	out := filepath.Join(t.TempDir(), "bench-peers.json")
	require.NoError(t, WriteJSON(out, res.Rows))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"scenario": "pod creation through kube-apiserver`)
}

// TestKyvernoVersionIsTheBuiltOne holds KyvernoVersion, which the rows name, to the
// version hack/kyverno.sh builds.
func TestKyvernoVersionIsTheBuiltOne(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	script, err := os.ReadFile(filepath.Join(root, "hack", "kyverno.sh"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^KYVERNO_VERSION=(\S+)$`).FindSubmatch(script)
	require.NotNil(t, m, "hack/kyverno.sh sets KYVERNO_VERSION")
	assert.Equal(t, KyvernoVersion, string(m[1]))
}
