package policies

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// TestNoInitContainerWritesANodeSysctl: whatever the policy holds and whatever
// image it names, the sysctls step never puts a sysctl that is not namespaced
// (or is malformed) in the init container or the securityContext. It calls the
// step directly, as a policy that slipped past validation would reach it.
func TestNoInitContainerWritesANodeSysctl(t *testing.T) {
	policy := v1alpha1.NewDefault()
	policy.Spec.Sysctls.Method = v1alpha1.SysctlInitContainer
	policy.Spec.Sysctls.Image = "busybox:1.36"
	policy.Spec.Sysctls.Values = map[string]v1alpha1.SysctlValue{
		"kernel.modprobe":          "/tmp/x",
		"vm.overcommit_memory":     "1",
		"kernel/core_pattern":      "|/tmp/x",
		"net.ipv4.tcp_retries2":    "9",
		"net.ipv4.tcp_syn_retries": "3; reboot",
	}
	ctx := Context{Policy: policy, SysctlImage: "registry.example/ha-injector:v1", AllowedSysctlImages: []string{"busybox:1.36"}}
	spec := &corev1.PodSpec{}
	decisions := sysctlsInjection{}.Apply(&Input{Policy: policy, Context: ctx, Workload: Workload{Kind: KindPod}, Spec: spec, Record: &Record{}, original: &corev1.PodSpec{}})

	require.Len(t, spec.InitContainers, 1)
	assert.Equal(t, []string{"sysctl", "-w", "net.ipv4.tcp_retries2=9"}, spec.InitContainers[0].Command)
	assert.Nil(t, spec.SecurityContext)
	var refused []string
	for _, d := range decisions {
		if d.Fallback == FallbackNotNamespaced {
			refused = append(refused, d.Reason)
		}
	}
	require.Len(t, refused, 1)
	for _, name := range []string{"kernel.core_pattern", "kernel.modprobe", "vm.overcommit_memory", "tcp_syn_retries"} {
		assert.Contains(t, refused[0], name)
	}
}

func TestSysctlImageAllowed(t *testing.T) {
	allowed := []string{"registry.example/ha-injector:v1.0.0", "registry.example/mirror/busybox", "localhost:5000/tools"}
	for image, want := range map[string]bool{
		"registry.example/ha-injector:v1.0.0":                 true,
		"registry.example/ha-injector:v1.0.1":                 false, // a tag is exact
		"registry.example/ha-injector":                        false,
		"registry.example/mirror/busybox:1.36":                true, // a repository allows its tags
		"registry.example/mirror/busybox@sha256:0123456789ab": true, // and its digests
		"registry.example/mirror/busybox-evil:1":              false,
		"registry.example/mirror/busybox/sub:1":               false,
		"localhost:5000/tools:2":                              true, // a port is not a tag
		"localhost:5000/tools-x":                              false,
		"busybox:1.36":                                        false,
	} {
		assert.Equal(t, want, SysctlImageAllowed(image, allowed), image)
	}
	assert.False(t, SysctlImageAllowed("busybox", nil))
}

// TestDefaultPullPolicy follows SetDefaults_Container: Always for latest, or
// for no tag and no digest; IfNotPresent otherwise.
func TestDefaultPullPolicy(t *testing.T) {
	for image, want := range map[string]corev1.PullPolicy{
		"busybox":                         corev1.PullAlways,
		"busybox:latest":                  corev1.PullAlways,
		"busybox:1.36":                    corev1.PullIfNotPresent,
		"localhost:5000/busybox":          corev1.PullAlways,
		"localhost:5000/busybox:1":        corev1.PullIfNotPresent,
		"busybox@sha256:abc":              corev1.PullIfNotPresent,
		"busybox:latest@sha256:abc":       corev1.PullAlways,
		"registry.example/a/b:v1@sha256:": corev1.PullIfNotPresent,
	} {
		assert.Equal(t, want, defaultPullPolicy(image), image)
	}
}

// TestRecordedContainerIgnoresOnlyWhatTheAPIServerAdds: the injected container,
// as the API server stores it, is recognised; any change of the user's is not.
func TestRecordedContainerIgnoresOnlyWhatTheAPIServerAdds(t *testing.T) {
	injected := sysctlContainerRun("registry.example/ha-injector:v1", []string{"/ha-sysctl", "net.ipv4.tcp_retries2=9"})
	stored := injected.DeepCopy()
	stored.TerminationMessagePath = corev1.TerminationMessagePathDefault
	stored.ImagePullPolicy = corev1.PullIfNotPresent
	stored.VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-abcde", MountPath: serviceAccountMountPath, ReadOnly: true}}
	assert.True(t, isRecordedContainer(&injected, stored))

	for name, change := range map[string]func(c *corev1.Container){
		"args": func(c *corev1.Container) { c.Args = []string{"--x"} },
		"env":  func(c *corev1.Container) { c.Env = []corev1.EnvVar{{Name: "A", Value: "b"}} },
		"a hostPath mount": func(c *corev1.Container) {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "host", MountPath: "/host"})
		},
		"a writable token": func(c *corev1.Container) { c.VolumeMounts[0].ReadOnly = false },
		"capabilities": func(c *corev1.Container) {
			c.SecurityContext.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}
		},
		"another pull":       func(c *corev1.Container) { c.ImagePullPolicy = corev1.PullNever },
		"another name":       func(c *corev1.Container) { c.Name = "other" },
		"another image":      func(c *corev1.Container) { c.Image = "busybox" },
		"another command":    func(c *corev1.Container) { c.Command = append(c.Command, "net.ipv4.tcp_syn_retries=3") },
		"larger limits":      func(c *corev1.Container) { c.Resources.Limits = nil },
		"a working dir":      func(c *corev1.Container) { c.WorkingDir = "/tmp" },
		"not read-only root": func(c *corev1.Container) { c.SecurityContext.ReadOnlyRootFilesystem = ptr.To(false) },
	} {
		c := stored.DeepCopy()
		change(c)
		assert.False(t, isRecordedContainer(&injected, c), name)
	}
}

// TestInvalidPolicyIsCheckedOncePerVersion: a stored policy is validated once
// per version, with Validate; a new valid version clears it.
func TestInvalidPolicyIsCheckedOncePerVersion(t *testing.T) {
	p := &v1alpha1.HAPolicy{}
	p.Name, p.UID, p.ResourceVersion = "bad", "uid-invalid", "1"
	p.Spec.Sysctls.Values = map[string]v1alpha1.SysctlValue{"vm.overcommit_memory": "1"}
	err := PolicyError(p)
	var invalid *InvalidPolicyError
	require.True(t, errors.As(err, &invalid))
	assert.Equal(t, "bad", invalid.Policy)
	assert.ErrorContains(t, err, `spec.sysctls.values[vm.overcommit_memory]`)
	assert.Same(t, err, PolicyError(p), "the same version: checked once")

	p.ResourceVersion = "2"
	p.Spec.Sysctls.Values = nil
	assert.NoError(t, PolicyError(p))
}
