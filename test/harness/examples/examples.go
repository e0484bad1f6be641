// Package examples reads the manifests in the repository's examples/ folder, so the
// demo and the failover measurement run the very workload the README shows.
package examples

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// WebServerPath is the seed's 3-replica web-server Deployment, relative to the repository.
const WebServerPath = "examples/web-server.yaml"

// WebServer reads the Deployment of examples/web-server.yaml under root, strictly.
func WebServer(root string) (*appsv1.Deployment, error) {
	path := filepath.Join(root, WebServerPath)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if meta.Kind != "Deployment" {
			continue
		}
		d := &appsv1.Deployment{}
		if err := yaml.UnmarshalStrict(doc, d); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if d.Labels == nil || d.Spec.Selector == nil || d.Spec.Template.Labels == nil {
			return nil, errors.New(path + ": the Deployment needs labels, a selector and template labels")
		}
		return d, nil
	}
	return nil, fmt.Errorf("%s has no Deployment", path)
}
