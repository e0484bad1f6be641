// Package doctor answers "does injection work on this cluster, and if not, why?": a
// list of checks, each ok, warn or fail with what it saw and what to do, read from the
// cluster with nothing changed (its only writes are server-side dry runs). It is
// `ha-injector doctor`; the command only wires flags and prints.
package doctor

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Status is a check's verdict.
type Status string

// The verdicts, from good to bad.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one line of the report: what was looked at, what was seen, and what to do
// when it is not ok.
type Check struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
	// Items are the objects the message counts, when asked for (--workloads).
	Items []string `json:"items,omitempty"`
}

// Report is every check, in the order they ran.
type Report struct {
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

// WriteText writes one line per check (status, name, what was seen) and, indented
// under it, what to do when it is not ok and the items it counts.
func (r *Report) WriteText(w io.Writer) error {
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	indent := strings.Repeat(" ", 4+2+width+2)
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", c.Status, width, c.Name, c.Message)
		if c.Fix != "" && c.Status != OK {
			fmt.Fprintf(&b, "%s→ %s\n", indent, c.Fix)
		}
		for _, item := range c.Items {
			fmt.Fprintf(&b, "%s- %s\n", indent, item)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Options say where to look.
type Options struct {
	// Namespace limits the namespace checks and the probe to one namespace.
	Namespace string
	// ReleaseNamespace is where the chart is installed; empty: found from the
	// webhook configuration.
	ReleaseNamespace string
	// Workloads lists the workloads a restart would change, not only their count.
	Workloads bool
	// DefaultSysctlImage is serve's --sysctl-image default (ha-injector's image at
	// this binary's version), used when the webhook's Deployment sets none.
	DefaultSysctlImage string
	// Now is the time certificates are judged at; zero: time.Now().
	Now time.Time
}

// CertExpiryWarning is how close to its expiry a certificate gets a warning.
const CertExpiryWarning = 14 * 24 * time.Hour

// Scheme knows every type doctor reads: the built-in ones, the HAPolicy API, the CRD
// API and cert-manager's.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(Scheme))
	utilruntime.Must(cmapi.AddToScheme(Scheme))
}

// UnreachableError is Run's error when the cluster could not be reached at all.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("the cluster could not be reached: %v", e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// doctor carries what the checks share.
type doctor struct {
	opts   Options
	c      client.Client
	cs     kubernetes.Interface
	cfg    *rest.Config
	report Report

	install *installation.Installation
	// native is ha-injector's MutatingAdmissionPolicy, when the cluster runs
	// native mode.
	native *admissionregistrationv1.MutatingAdmissionPolicy
	// policies are the HAPolicies by name; nil when they could not be read.
	policies map[string]*v1alpha1.HAPolicy
	// optedIn are the namespaces that name a policy and that the pods webhook's
	// namespaceSelector sends to the webhook, by name.
	optedIn []corev1.Namespace
	// facts gathers the engine's context as the webhook would (gatherer),
	// with the webhook's settings, resolved once (settings).
	facts    *facts.Gatherer
	resolved *facts.Settings
}

// Run runs every check against the cluster cfg connects to and returns the report. Its
// error is an *UnreachableError when the API server could not be reached; everything
// else is a check in the report.
func Run(ctx context.Context, cfg *rest.Config, opts Options) (*Report, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, &UnreachableError{Err: err}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, &UnreachableError{Err: err}
	}
	d := &doctor{opts: opts, c: c, cs: cs, cfg: cfg}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return nil, &UnreachableError{Err: err}
	}
	d.checkCRD(ctx)
	d.checkPolicies(ctx)
	d.native = d.checkMode(ctx)
	if d.native == nil || d.hasWebhookConfiguration(ctx) {
		if d.checkWebhookConfiguration(ctx) {
			d.checkPolicyImages()
			d.checkServingCertificate(ctx)
			d.checkCertManager(ctx)
			d.checkDeployment(ctx)
		}
	}
	if d.native != nil {
		d.checkNativeBindings(ctx, d.native)
		d.checkNativeServe(ctx, d.native)
		d.checkWebhookInjected(ctx)
	}
	d.checkReleasePods(ctx)
	if d.checkNamespaces(ctx) {
		d.probe(ctx)
		d.checkSysctlFailures(ctx)
		d.checkNodes(ctx)
		d.checkPrivilegedTemplates(ctx)
		d.checkWorkloads(ctx)
	}
	return &d.report, nil
}

// cannotRead is the check for a read that failed: a warning for a permission the user
// lacks, a failure otherwise.
func cannotRead(name, what string, err error) Check {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return Check{Name: name, Status: Warn, Message: fmt.Sprintf("cannot read %s: %v", what, shortErr(err)),
			Fix: "run doctor with a user that can get and list " + what}
	}
	return Check{Name: name, Status: Fail, Message: fmt.Sprintf("reading %s: %v", what, shortErr(err))}
}

// shortErr is the first line of an error, at most 300 characters.
func shortErr(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// checkCRD: the HAPolicy CRD is installed, established and serves v1alpha1.
func (d *doctor) checkCRD(ctx context.Context) {
	const name = "crd"
	var crd apiextensionsv1.CustomResourceDefinition
	crdName := "hapolicies." + v1alpha1.GroupVersion.Group
	if err := d.c.Get(ctx, client.ObjectKey{Name: crdName}, &crd); err != nil {
		if apierrors.IsNotFound(err) {
			d.report.add(Check{Name: name, Status: Fail, Message: "the HAPolicy CRD (" + crdName + ") is not installed",
				Fix: "install the chart (helm install ha-injector charts/ha-injector), which installs the CRD from its crds/ folder"})
			return
		}
		d.report.add(cannotRead(name, "customresourcedefinitions", err))
		return
	}
	established := false
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			established = true
		}
	}
	served := false
	for _, v := range crd.Spec.Versions {
		if v.Name == v1alpha1.GroupVersion.Version && v.Served {
			served = true
		}
	}
	switch {
	case !established:
		d.report.add(Check{Name: name, Status: Fail, Message: crdName + " is installed but not Established",
			Fix: "kubectl describe crd " + crdName + " shows why (a conflicting CRD name, an invalid schema)"})
	case !served:
		d.report.add(Check{Name: name, Status: Fail, Message: crdName + " does not serve " + v1alpha1.GroupVersion.Version,
			Fix: "upgrade the chart (its pre-upgrade hook applies the CRD this binary reads; with crds.upgrade=false: kubectl apply --server-side --force-conflicts -f charts/ha-injector/crds/)"})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: crdName + " is established and serves " + v1alpha1.GroupVersion.Version})
	}
}

// checkPolicies: every HAPolicy is valid; what is valid but likely a mistake (a not-ready
// toleration too short to ride out a kubelet hiccup, a 0 s unreachable one) is warned
// about, in HAPolicy.Warnings' words, as preview and the chart's ValidatingAdmissionPolicy
// do.
func (d *doctor) checkPolicies(ctx context.Context) {
	const name = "policies"
	var list v1alpha1.HAPolicyList
	if err := d.c.List(ctx, &list); err != nil {
		if !meta404(err) {
			d.report.add(cannotRead(name, "hapolicies", err))
		}
		return
	}
	d.policies = map[string]*v1alpha1.HAPolicy{}
	if len(list.Items) == 0 {
		d.report.add(Check{Name: name, Status: Warn, Message: "no HAPolicy exists: a namespace label has nothing to name",
			Fix: "the chart creates one named default (value policies); or kubectl apply -f examples/policy-strict.yaml"})
		return
	}
	var names, invalid, unwise []string
	for i := range list.Items {
		p := &list.Items[i]
		d.policies[p.Name] = p
		names = append(names, p.Name)
		// The webhook's own check: the same Validate as the CRD and preview.
		if err := policies.PolicyError(p); err != nil {
			invalid = append(invalid, err.Error())
			continue
		}
		defaulted := p.DeepCopy()
		defaulted.Default()
		for _, w := range defaulted.Warnings() {
			unwise = append(unwise, "HAPolicy "+p.Name+": "+w)
		}
	}
	sort.Strings(names)
	switch {
	case len(invalid) > 0:
		d.report.add(Check{Name: name, Status: Fail, Message: strings.Join(invalid, "; "),
			Fix: "fix them with kubectl edit hapolicy NAME (the webhook applies nothing of an invalid policy: the pods and Deployments of its namespaces are admitted unchanged, with a warning), and upgrade the CRD if it is older than the chart's (crds.upgrade)"})
	case len(unwise) > 0:
		d.report.add(Check{Name: name, Status: Warn, Message: strings.Join(unwise, "; "),
			Fix: fmt.Sprintf("kubectl edit hapolicy NAME: a not-ready toleration of %d s or more (the default policy's is 60 s, which rode out a 45 s kubelet hiccup in make failover), an unreachable one of a few seconds at least (the default policy's is 30 s)", v1alpha1.AdvisedMinNotReadySeconds)})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("%d valid: %s", len(names), strings.Join(names, ", "))})
	}
}

// checkPolicyImages: no valid HAPolicy names an image for the ha-sysctl init container
// that the installation (serve --allowed-sysctl-images) does not allow.
func (d *doctor) checkPolicyImages() {
	const name = "policy-images"
	allowed := d.allowedSysctlImages()
	var images []string
	for _, p := range d.policies {
		image := p.Spec.Sysctls.Image
		if image == "" || !enabled(p.Spec.Sysctls.Enabled) || policies.PolicyError(p) != nil || policies.SysctlImageAllowed(image, allowed) {
			continue
		}
		images = append(images, fmt.Sprintf("%s (%s)", p.Name, image))
	}
	if len(images) == 0 {
		return
	}
	sort.Strings(images)
	d.report.add(Check{Name: name, Status: Warn,
		Message: "HAPolicies naming an image the installation does not allow for the ha-sysctl init container, so their pods get no init container: " + strings.Join(images, ", "),
		Fix:     "add the image to the chart's sysctlImage.allowed (serve --allowed-sysctl-images) if you trust it to run privileged in every pod of those namespaces, or remove spec.sysctls.image"})
}

// enabled reads an optional switch of a policy's spec: absent means on.
func enabled(b *bool) bool { return b == nil || *b }

// meta404 is an error for a kind the API server does not serve (its CRD is missing):
// reported by the check of the CRD, not again.
func meta404(err error) bool {
	return apierrors.IsNotFound(err) || strings.Contains(err.Error(), "no matches for kind")
}

// checkNamespaces: the opted-in namespaces name policies that exist. It returns false
// when there is nothing to probe.
func (d *doctor) checkNamespaces(ctx context.Context) bool {
	const name = "namespaces"
	var list corev1.NamespaceList
	if d.opts.Namespace != "" {
		var ns corev1.Namespace
		if err := d.c.Get(ctx, client.ObjectKey{Name: d.opts.Namespace}, &ns); err != nil {
			if apierrors.IsNotFound(err) {
				d.report.add(Check{Name: name, Status: Fail, Message: "namespace " + d.opts.Namespace + " does not exist"})
			} else {
				d.report.add(cannotRead(name, "namespaces", err))
			}
			return false
		}
		list.Items = []corev1.Namespace{ns}
		if _, ok := ns.Labels[policies.PolicyLabel]; !ok {
			d.report.add(Check{Name: name, Status: Fail, Message: "namespace " + d.opts.Namespace + " does not opt in: it has no " + policies.PolicyLabel + " label",
				Fix: "kubectl label namespace " + d.opts.Namespace + " " + policies.PolicyLabel + "=default"})
			return false
		}
	} else if err := d.c.List(ctx, &list, client.HasLabels{policies.PolicyLabel}); err != nil {
		d.report.add(cannotRead(name, "namespaces", err))
		return false
	}
	var selector *metav1.LabelSelector
	if hook := d.podHook(); hook != nil {
		selector = hook.NamespaceSelector
	} else if d.native != nil && d.native.Spec.MatchConstraints != nil {
		selector = d.native.Spec.MatchConstraints.NamespaceSelector
	}
	var missing, excluded []string
	for _, ns := range list.Items {
		policy := ns.Labels[policies.PolicyLabel]
		switch {
		case !installation.Selects(selector, ns.Labels):
			excluded = append(excluded, ns.Name)
		case d.policies != nil && d.policies[policy] == nil:
			missing = append(missing, fmt.Sprintf("%s (%s)", ns.Name, policy))
		default:
			d.optedIn = append(d.optedIn, ns)
		}
	}
	switch {
	case len(list.Items) == 0:
		d.report.add(Check{Name: name, Status: Warn, Message: "no namespace opts in: the webhook has nothing to do",
			Fix: "kubectl label namespace NAME " + policies.PolicyLabel + "=default"})
	case len(missing) > 0:
		d.report.add(Check{Name: name, Status: Fail, Message: "namespaces name an HAPolicy that does not exist (their pods are admitted unchanged, with a warning): " + strings.Join(missing, ", "),
			Fix: "kubectl get hapolicies; create the policy or relabel the namespace"})
	case len(excluded) > 0:
		d.report.add(Check{Name: name, Status: Warn, Message: "opted in, but excluded by the webhook's namespaceSelector (never called there): " + strings.Join(excluded, ", "),
			Fix: "the chart never injects kube-system, kube-node-lease, kube-public, its own namespace or webhook.excludeNamespaces"})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("%d opted in, every label names an existing HAPolicy", len(d.optedIn))})
	}
	return len(d.optedIn) > 0
}

// podHook is the pods webhook of the configuration found, or nil.
func (d *doctor) podHook() *admissionregistrationv1.MutatingWebhook {
	if d.install == nil {
		return nil
	}
	return installation.PodHook(d.install.Webhooks)
}
