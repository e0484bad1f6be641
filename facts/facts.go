package facts

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Settings are the installation's: what serve is started with.
type Settings struct {
	// SysctlImage is the image of the ha-sysctl init container for the
	// policies that name none (serve --sysctl-image).
	SysctlImage string
	// AllowedSysctlImages are the images a policy may name for it
	// (--allowed-sysctl-images; nil: SysctlImage alone).
	AllowedSysctlImages []string
	// PodSecurity is the cluster's Pod Security default, resolved (never auto).
	PodSecurity policies.PodSecurityDefault
}

// Source is where facts are read, read only.
type Source interface {
	// NamespaceLabels returns the labels of the namespace name.
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
	// Policy returns the HAPolicy name, as stored (read only: not defaulted).
	Policy(ctx context.Context, name string) (*v1alpha1.HAPolicy, error)
	// Owner returns what the cluster knows of a Pod's controller ref in
	// namespace: nil when that is nothing the engine reads (a Job).
	Owner(ctx context.Context, namespace string, ref *metav1.OwnerReference) (*policies.Owner, error)
	// TopologyDomains counts the distinct values of the node label key among
	// the nodes that run workloads; known is false when the source cannot tell.
	TopologyDomains(ctx context.Context, key string) (n int, known bool, err error)
	// Revisions returns the templates of the Deployment's ReplicaSets that
	// tmpl, its updated pod template, could be a rollback to.
	Revisions(ctx context.Context, namespace string, d *appsv1.Deployment, tmpl *corev1.PodTemplateSpec) ([]corev1.PodTemplateSpec, error)
}

// Namespace is what the engine reads of a namespace: its name and labels,
// and the HAPolicy its label names ("" when it does not opt in).
type Namespace struct {
	Name       string
	Labels     map[string]string
	PolicyName string
}

// PolicyError says the HAPolicy a namespace names cannot be used: it could
// not be read (Err), or it breaks a rule of its CRD (an *policies.InvalidPolicyError).
type PolicyError struct {
	Name      string
	Namespace string
	Err       error
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("HAPolicy %q named by namespace %s: %v", e.Name, e.Namespace, e.Err)
}

func (e *PolicyError) Unwrap() error { return e.Err }

// Gatherer builds the engine's context for an object from a Source and the
// installation's Settings.
type Gatherer struct {
	Source   Source
	Settings Settings
	// Unknown, when set, is told of what could not be read but is not
	// needed to admit: the engine then does what is safe without it (an
	// owner or a domain count it does not know).
	Unknown func(ctx context.Context, what string, err error)
}

// Namespace reads the namespace's labels.
func (g *Gatherer) Namespace(ctx context.Context, name string) (*Namespace, error) {
	if name == "" {
		return nil, errors.New("no namespace")
	}
	labels, err := g.Source.NamespaceLabels(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Namespace{Name: name, Labels: labels, PolicyName: labels[policies.PolicyLabel]}, nil
}

// Policy returns the HAPolicy the namespace names (nil when it names none), or
// a *PolicyError when it cannot be read or breaks a rule of its CRD.
func (g *Gatherer) Policy(ctx context.Context, ns *Namespace) (*v1alpha1.HAPolicy, error) {
	if ns.PolicyName == "" {
		return nil, nil
	}
	p, err := g.Source.Policy(ctx, ns.PolicyName)
	if err == nil {
		err = policies.PolicyError(p)
	}
	if err != nil {
		return nil, &PolicyError{Name: ns.PolicyName, Namespace: ns.Name, Err: err}
	}
	return p, nil
}

// Context gathers the engine's context for obj, created or updated in ns
// under policy (nil: the namespace no longer opts in); old is the stored
// object of an UPDATE, else nil. Its error is one reading a Deployment's
// revisions: what else it cannot read, it leaves unknown.
func (g *Gatherer) Context(ctx context.Context, ns *Namespace, policy *v1alpha1.HAPolicy, obj, old *policies.Object) (policies.Context, error) {
	pctx := policies.Context{
		Policy:              policy,
		Namespace:           policies.Namespace{Name: ns.Name, Labels: ns.Labels},
		SysctlImage:         g.Settings.SysctlImage,
		AllowedSysctlImages: g.Settings.AllowedSysctlImages,
		NotOptedIn:          policy == nil,
	}
	pctx.Cluster.PodSecurity = g.Settings.PodSecurity
	switch obj.Kind {
	case policies.KindPod:
		if ref := obj.Controller(); ref != nil {
			owner, err := g.Source.Owner(ctx, ns.Name, ref)
			if err != nil {
				g.unknown(ctx, fmt.Sprintf("%s %s, the pod's controller", ref.Kind, ref.Name), err)
			}
			pctx.Owner = owner
		}
	case policies.KindDeployment:
		if old != nil {
			pctx.Update = policies.NewUpdate(old.Template, obj.Template)
			if d, ok := old.Object.(*appsv1.Deployment); ok && pctx.Update.TemplateChanged && d.UID != "" {
				revisions, err := g.Source.Revisions(ctx, ns.Name, d, obj.Template)
				if err != nil {
					return pctx, fmt.Errorf("reading the ReplicaSets of Deployment %s: %w", d.Name, err)
				}
				pctx.Update.Revisions = revisions
			}
		}
	}
	if policy != nil {
		for _, key := range policies.NeedsOf(policy, obj.Workload(pctx.Owner)).TopologyKeys {
			n, known, err := g.Source.TopologyDomains(ctx, key)
			if err != nil {
				g.unknown(ctx, "the number of "+key+" domains", err)
				continue
			}
			if known {
				if pctx.Cluster.TopologyDomains == nil {
					pctx.Cluster.TopologyDomains = map[string]int{}
				}
				pctx.Cluster.TopologyDomains[key] = n
			}
		}
	}
	return pctx, nil
}

func (g *Gatherer) unknown(ctx context.Context, what string, err error) {
	if g.Unknown != nil {
		g.Unknown(ctx, what, err)
	}
}
