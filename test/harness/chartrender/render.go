// Package chartrender renders the ha-injector Helm chart the way `helm template` does,
// with the Helm Go SDK, so tests and the demo install exactly what users install.
package chartrender

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// ChartDir is the chart's folder relative to the repository root.
const ChartDir = "charts/ha-injector"

// Options name the release the way `helm install NAME -n NAMESPACE` does.
type Options struct {
	// ReleaseName defaults to "ha-injector".
	ReleaseName string
	// Namespace defaults to "ha-injector".
	Namespace string
	// IncludeCRDs renders the chart's crds/ folder first, like `helm template --include-crds`.
	IncludeCRDs bool
	// APIVersions are API versions the cluster serves beyond Helm's defaults, like
	// `helm template --api-versions` ("group/version" or "group/version/Kind"; an
	// install discovers them all).
	APIVersions []string
	// SkipSchemaValidation renders without checking the values against
	// values.schema.json, like `helm install --skip-schema-validation`.
	SkipSchemaValidation bool
}

// Document is one rendered object and the template it came from.
type Document struct {
	// Source is the template path, e.g. "ha-injector/templates/deployment.yaml".
	Source string
	// Object is the decoded object.
	Object *unstructured.Unstructured
	// YAML is the object as the template rendered it.
	YAML []byte
}

// Result is one render of the chart.
type Result struct {
	// Manifest is the whole render as `helm template` prints it (CRDs first when asked).
	Manifest string
	// Notes is the rendered NOTES.txt.
	Notes string
	// Documents are the release's objects in Manifest, in order, hooks excluded.
	Documents []Document
	// Hooks are the objects Helm creates around an install or upgrade (helm.sh/hook),
	// ordered by weight; Manifest ends with them, as `helm template` prints them.
	Hooks []Document
}

// Load reads the chart from the repository root.
func Load(repoRoot string) (*chartv2.Chart, error) {
	return loader.Load(filepath.Join(repoRoot, ChartDir))
}

// Render renders chart with values the way `helm template` does: values merged over
// values.yaml and checked against values.schema.json, templates rendered and ordered by
// Helm's install order, CRDs first when asked. No API server is contacted.
func Render(chart *chartv2.Chart, values map[string]any, opts Options) (*Result, error) {
	if opts.ReleaseName == "" {
		opts.ReleaseName = "ha-injector"
	}
	if opts.Namespace == "" {
		opts.Namespace = "ha-injector"
	}
	if values == nil {
		values = map[string]any{}
	}
	release := common.ReleaseOptions{Name: opts.ReleaseName, Namespace: opts.Namespace, Revision: 1, IsInstall: true}
	caps := common.DefaultCapabilities.Copy()
	caps.APIVersions = append(slices.Clone(caps.APIVersions), opts.APIVersions...)
	renderValues, err := util.ToRenderValuesWithSchemaValidation(chart, values, release, caps, opts.SkipSchemaValidation)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chart, renderValues)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	var manifest strings.Builder
	if opts.IncludeCRDs {
		for _, crd := range chart.CRDObjects() {
			fmt.Fprintf(&manifest, "---\n# Source: %s\n%s\n", crd.Filename, strings.TrimSpace(string(crd.File.Data)))
		}
	}
	for name, content := range files {
		if strings.HasSuffix(name, "/NOTES.txt") {
			res.Notes = content
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	for _, m := range manifests {
		fmt.Fprintf(&manifest, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	if res.Documents, err = Split(manifest.String()); err != nil {
		return nil, err
	}
	var hookManifest strings.Builder
	for _, h := range hooks {
		fmt.Fprintf(&hookManifest, "---\n# Source: %s\n%s\n", h.Path, strings.TrimSpace(h.Manifest))
	}
	if res.Hooks, err = Split(hookManifest.String()); err != nil {
		return nil, err
	}
	res.Manifest = manifest.String() + hookManifest.String()
	return res, nil
}

// Split decodes a `helm template` style stream, keeping each document's "# Source:" line.
func Split(manifest string) ([]Document, error) {
	var docs []Document
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for i := 1; ; i++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		source := ""
		for _, line := range strings.Split(string(raw), "\n") {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok {
				source = s
				break
			}
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, source, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		docs = append(docs, Document{Source: source, Object: obj, YAML: bytes.TrimSpace(raw)})
	}
}

// Find returns the documents of one kind, sorted by name.
func (r *Result) Find(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, d := range r.Documents {
		if d.Object.GetKind() == kind {
			out = append(out, d.Object)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// Get returns the one document of a kind and name, or nil.
func (r *Result) Get(kind, name string) *unstructured.Unstructured {
	for _, d := range r.Documents {
		if d.Object.GetKind() == kind && d.Object.GetName() == name {
			return d.Object
		}
	}
	return nil
}
