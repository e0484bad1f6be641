package image

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/modfile"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// instruction is one Dockerfile instruction with its stage.
type instruction struct {
	stage   int
	keyword string
	args    string
}

// parseDockerfile reads instructions, joining continued lines; enough for a Dockerfile
// kept small enough to review by eye.
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []instruction
	stage := -1
	var pending string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if strings.HasPrefix(line, "#") || (line == "" && pending == "") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		keyword, args, _ := strings.Cut(line, " ")
		keyword = strings.ToUpper(keyword)
		if keyword == "FROM" {
			stage++
		}
		out = append(out, instruction{stage: stage, keyword: keyword, args: strings.TrimSpace(args)})
	}
	require.NoError(t, s.Err())
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	return filepath.Join(wd, "..", "..")
}

// TestDockerfile checks the image's shape: a Go build stage on the Go release go.mod
// names, then a distroless static nonroot stage that only copies the binary, runs as
// 65532:65532 and starts it directly (exec form: there is no shell to run anything else).
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	var froms []instruction
	for _, in := range ins {
		if in.keyword == "FROM" {
			froms = append(froms, in)
		}
	}
	require.Len(t, froms, 2, "multi-stage: build, then run")

	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	mod, err := modfile.Parse("go.mod", data, nil)
	require.NoError(t, err)
	goMinor := regexp.MustCompile(`^\d+\.\d+`).FindString(mod.Go.Version)
	assert.Regexp(t, `^golang:`+regexp.QuoteMeta(goMinor)+`(\.\d+)?(-\S+)? AS build$`, froms[0].args, "the build stage uses the Go release go.mod names")
	assert.Equal(t, "gcr.io/distroless/static-debian12:nonroot", froms[1].args, "distroless static, nonroot variant")

	var final []instruction
	for _, in := range ins {
		if in.stage == 1 {
			final = append(final, in)
		}
	}
	kinds := map[string][]string{}
	for _, in := range final {
		kinds[in.keyword] = append(kinds[in.keyword], in.args)
	}
	assert.Empty(t, kinds["RUN"], "nothing runs in the final stage: it has no shell")
	assert.Equal(t, []string{
		"--from=build /src/bin/ha-injector /ha-injector",
		"--from=build /src/bin/ha-sysctl /ha-sysctl", // the injected init container's applier
	}, kinds["COPY"], "only the two binaries are copied")
	// The command the webhook injects runs a path the image really has.
	m, err := policies.Mutate(policies.Context{Policy: v1alpha1.NewDefault(), SysctlImage: "ha-injector"},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}})
	require.NoError(t, err)
	inits := m.Object.(*corev1.Pod).Spec.InitContainers
	require.Len(t, inits, 1)
	assert.Contains(t, kinds["COPY"], "--from=build /src/bin/ha-sysctl "+inits[0].Command[0], "the injected ha-sysctl command is a binary of the image")
	assert.Equal(t, []string{"65532:65532"}, kinds["USER"])
	assert.Equal(t, []string{`["/ha-injector"]`}, kinds["ENTRYPOINT"], "exec form")
	assert.Equal(t, []string{`["serve"]`}, kinds["CMD"])
}

// TestImageBuildIsStatic runs the build stage's own RUN line (make build, with the output
// redirected to a temporary folder) and checks each binary the final stage copies is what
// a distroless static image can run: no dynamic loader, no shared libraries, CGO off,
// paths trimmed, symbols stripped, version stamped.
func TestImageBuildIsStatic(t *testing.T) {
	root := repoRoot(t)
	var build []string
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	for _, in := range ins {
		if in.stage == 0 && in.keyword == "RUN" && strings.HasPrefix(in.args, "make ") {
			build = strings.Fields(in.args)
		}
	}
	require.NotEmpty(t, build, "the build stage runs make")
	require.Equal(t, "build", build[1], "the build stage runs `make build`, the build the tests exercise")
	out := t.TempDir()
	args := []string{"-C", root, "build", "BIN_DIR=" + out, "VERSION=image-test"}
	cmd := exec.Command("make", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "make %s: %s", strings.Join(args, " "), stderr.String())

	// Every binary the final stage copies from the build stage must come out of make build.
	var shipped []string
	for _, in := range ins {
		if in.stage == 1 && in.keyword == "COPY" {
			if src, ok := strings.CutPrefix(strings.Fields(in.args)[1], "/src/bin/"); ok {
				shipped = append(shipped, src)
			}
		}
	}
	require.Equal(t, []string{"ha-injector", "ha-sysctl"}, shipped)
	for _, name := range shipped {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(out, name)
			f, err := elf.Open(bin)
			require.NoError(t, err, "make build writes %s", name)
			defer f.Close()
			for _, p := range f.Progs {
				assert.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary has no dynamic loader")
			}
			libs, err := f.ImportedLibraries()
			require.NoError(t, err)
			assert.Empty(t, libs, "no shared libraries")

			info, err := buildinfo.ReadFile(bin)
			require.NoError(t, err)
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			assert.Equal(t, "0", settings["CGO_ENABLED"])
			assert.Equal(t, "true", settings["-trimpath"])
			assert.Nil(t, f.Section(".symtab"), "symbols stripped (-s)")

			version, err := exec.Command(bin, "--version").Output()
			require.NoError(t, err)
			assert.Contains(t, string(version), "image-test", "the version is stamped")
		})
	}
}
