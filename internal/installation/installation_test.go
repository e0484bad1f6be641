package installation

import (
	"testing"

	"github.com/stretchr/testify/assert"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies"
)

func TestSettingsFromTheDeploymentsArguments(t *testing.T) {
	d := &appsv1.Deployment{}
	d.Spec.Template.Spec = corev1.PodSpec{
		Containers: []corev1.Container{
			{Name: "sidecar", Args: []string{"--sysctl-image=wrong"}},
			{Name: ContainerName, Args: []string{
				"serve", "--sysctl-image=registry.example/ha:1", "--pod-security-default-level", "baseline",
				"--pod-security-default-version=v1.30", "--cert-mode=self-managed", "--cert-secret-name=ignored-when-mounted",
				"--verbose", "--pod-security-default-level=restricted",
				"--allowed-sysctl-images=busybox:1.36,registry.example/mirror", "--allowed-sysctl-images", "other:2",
			}, VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: TLSMountPath}}},
		},
		Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "ha-injector-tls"}}}},
	}
	assert.Equal(t, Settings{
		SysctlImage:         "registry.example/ha:1",
		AllowedSysctlImages: []string{"busybox:1.36", "registry.example/mirror", "other:2"},
		PodSecurity:         policies.PodSecurityDefault{Level: "restricted", Version: "v1.30"},
		CertMode:            "self-managed",
		CertSecret:          "ha-injector-tls",
	}, settingsOf(d), "the last of a repeated flag wins, as with pflag, and a list flag collects every one; the mounted Secret is the one served")
	assert.Equal(t, Settings{}, settingsOf(&appsv1.Deployment{}))
}
