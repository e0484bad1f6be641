package doctor_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// TestDoctorBinary runs the real binary, as a user would, against the healthy
// installation: its exit codes and its two output formats.
func TestDoctorBinary(t *testing.T) {
	setup(t)
	bin := testenv.Binary(t)
	kubeconfig := testenv.Kubeconfig(t)

	doctorCmd := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, append([]string{"doctor"}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &exit)
			return o.String(), e.String(), exit.ExitCode()
		}
		return o.String(), e.String(), 0
	}

	t.Run("healthy: exit 0, a line per check", func(t *testing.T) {
		stdout, stderr, code := doctorCmd()
		assert.Equal(t, 0, code, stdout+stderr)
		assert.Regexp(t, `(?m)^ok    probe +in namespace team-a \(policy default`, stdout)
		assert.NotRegexp(t, `(?m)^fail`, stdout)
	})
	t.Run("-o json", func(t *testing.T) {
		stdout, _, code := doctorCmd("-o", "json", "--kubeconfig", kubeconfig)
		assert.Equal(t, 0, code)
		var r doctor.Report
		require.NoError(t, json.Unmarshal([]byte(stdout), &r))
		require.NotEmpty(t, r.Checks)
		assert.Equal(t, "crd", r.Checks[0].Name)
		assert.Equal(t, doctor.OK, r.Checks[0].Status)
	})
	t.Run("a failed check: exit 1, with what to do", func(t *testing.T) {
		stdout, _, code := doctorCmd("--namespace", "no-such-namespace")
		assert.Equal(t, 1, code)
		assert.Contains(t, stdout, "fail  namespaces")
		assert.Contains(t, stdout, "namespace no-such-namespace does not exist")
	})
	t.Run("usage error: exit 2", func(t *testing.T) {
		_, stderr, code := doctorCmd("-o", "yaml")
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, `--output must be text or json, not "yaml"`)
	})
	t.Run("unreachable cluster: exit 3", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "unreachable")
		require.NoError(t, os.WriteFile(bad, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600))
		_, stderr, code := doctorCmd("--kubeconfig", bad)
		assert.Equal(t, 3, code, stderr)
		assert.Contains(t, stderr, "the cluster could not be reached")
	})
}
