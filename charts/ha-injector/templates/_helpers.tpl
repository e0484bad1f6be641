{{/* Chart name, at most 63 characters (a label value). */}}
{{- define "ha-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects, at most 63 characters (a DNS label). */}}
{{- define "ha-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the webhook pods; never change them (Deployment selectors are immutable). */}}
{{- define "ha-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ha-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "ha-injector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ha-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ha-injector
{{- end }}

{{/*
The label of the webhook's own Deployment and pods, by which `ha-injector doctor` finds
them. It exempts nothing: the webhook never sees its own pods because their namespace is
excluded by the webhook configuration's namespaceSelector.
*/}}
{{- define "ha-injector.selfLabel" -}}
ha-injector.io/component: webhook
{{- end }}

{{- define "ha-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ha-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Service's in-cluster DNS names, the serving certificate's subject alternative names. */}}
{{- define "ha-injector.dnsNames" -}}
{{- $svc := include "ha-injector.fullname" . -}}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* The Secret holding the serving certificate, mounted at the webhook's --webhook-cert-path. */}}
{{- define "ha-injector.tlsSecretName" -}}
{{- if eq (include "ha-injector.certMode" .) "provided" }}
{{- .Values.certs.provided.secretName }}
{{- else }}
{{- include "ha-injector.fullname" . }}-tls
{{- end }}
{{- end }}

{{/* The cert-manager CA: its Certificate, Secret and Issuer share this name. */}}
{{- define "ha-injector.caName" -}}
{{- include "ha-injector.fullname" . }}-ca
{{- end }}

{{/*
The admission mode: webhook (the API server calls serve for every Pod and Deployment) or
native (the API server applies the chart's MutatingAdmissionPolicy itself). auto is native
where the API server serves MutatingAdmissionPolicy in admissionregistration.k8s.io/v1, as
Helm discovers it on install and upgrade (`helm template` discovers nothing unless given
--api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy: webhook). Read with
its default when absent, for `helm upgrade --reuse-values` from a release without it.
*/}}
{{- define "ha-injector.admissionMode" -}}
{{- $mode := dig "mode" "webhook" (.Values.admission | default dict) }}
{{- if eq $mode "auto" }}
{{- $mode = ternary "native" "webhook" (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy") }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
The matchConstraints of native mode's admission policies: Pod CREATE in the namespaces
that opt in, never the excluded ones: the release namespace and webhook.excludeNamespaces,
then the system namespaces (the webhook configuration's list, in the order
internal/native writes it).
*/}}
{{- define "ha-injector.nativeMatchConstraints" -}}
namespaceSelector:
  matchExpressions:
    - key: ha-injector.io/policy
      operator: Exists
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml (concat (list .Release.Namespace) .Values.webhook.excludeNamespaces (list "kube-system" "kube-node-lease" "kube-public") | uniq) | nindent 8 }}
resourceRules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
    scope: Namespaced
matchPolicy: Equivalent
{{- end }}

{{/*
The certificate mode after checking that certManager.enabled and certs.mode agree and
that each mode has what it needs; fails the render with a message naming the values.
none in native mode, which serves no webhook and needs no certificate.
*/}}
{{- define "ha-injector.certMode" -}}
{{- if eq (include "ha-injector.admissionMode" .) "native" }}
{{- print "none" }}
{{- else }}
{{- $mode := .Values.certs.mode }}
{{- if and .Values.certManager.enabled (ne $mode "certManager") }}
{{- fail (printf "certs.mode is %q but certManager.enabled is true: set certManager.enabled=false to use %s" $mode $mode) }}
{{- end }}
{{- if and (not .Values.certManager.enabled) (eq $mode "certManager") }}
{{- fail "certManager.enabled is false but certs.mode is certManager: set certs.mode to selfManaged (ha-injector keeps its own CA) or provided (certs.provided.secretName and certs.provided.caBundle)" }}
{{- end }}
{{- if eq $mode "provided" }}
{{- if not .Values.certs.provided.secretName }}
{{- fail "certs.mode is provided: set certs.provided.secretName to a kubernetes.io/tls Secret in the release namespace" }}
{{- end }}
{{- if not .Values.certs.provided.caBundle }}
{{- fail "certs.mode is provided: set certs.provided.caBundle to the base64-encoded PEM of the CA that signed certs.provided.secretName" }}
{{- end }}
{{- end }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* The image reference: the digest when set, else the tag (default: appVersion). */}}
{{- define "ha-injector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The image of the injected ha-sysctl init container: sysctlImage, each part defaulting to
the chart's own image (a mirror of ha-injector's image goes here, not in a policy).
*/}}
{{- define "ha-injector.sysctlImage" -}}
{{- $repository := default .Values.image.repository .Values.sysctlImage.repository }}
{{- $digest := .Values.sysctlImage.digest }}
{{- if and (not .Values.sysctlImage.repository) (not .Values.sysctlImage.tag) (not $digest) }}
{{- $digest = .Values.image.digest }}
{{- end }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) .Values.sysctlImage.tag) }}
{{- end }}
{{- end }}

{{/*
The Pod Security level the API server enforces by default, podSecurity.defaultLevel with
auto resolved as serve resolves it: restricted where the API server serves the
security.openshift.io group (OpenShift), else privileged. Native mode compiles it into the
admission policies when Helm renders them; webhook mode passes auto to serve, which asks.
*/}}
{{- define "ha-injector.podSecurityLevel" -}}
{{- $level := .Values.podSecurity.defaultLevel }}
{{- if eq $level "auto" }}
{{- $level = "privileged" }}
{{- range .Capabilities.APIVersions }}
{{- if hasPrefix "security.openshift.io/" . }}
{{- $level = "restricted" }}
{{- end }}
{{- end }}
{{- end }}
{{- $level }}
{{- end }}

{{/*
GOMEMLIMIT for the webhook container, in bytes; empty without a memory limit: the limit
less what the Go runtime does not count, at least 10% and at least 32Mi (the binary's
code resident in memory, about 24Mi, also counts against the limit), but no less than half
the limit. 96Mi for the default 128Mi, 90% from 320Mi up.
*/}}
{{- define "ha-injector.goMemLimit" -}}
{{- with .Values.resources.limits }}{{ with .memory }}
{{- $q := toString . -}}
{{- $unit := regexFind "(Ki|Mi|Gi|Ti|k|M|G|T)$" $q -}}
{{- $factors := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $n := trimSuffix $unit $q -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(e\\+?[0-9]+)?$" $n) }}
{{- fail (printf "resources.limits.memory: %q is not a quantity of bytes such as 128Mi" $q) }}
{{- end }}
{{- $bytes := mulf (float64 $n) (index $factors $unit) -}}
{{- maxf (mulf $bytes 0.5) (minf (mulf $bytes 0.9) (subf $bytes 33554432)) | floor | int64 -}}
{{- end }}{{ end -}}
{{- end -}}

{{/*
Values added after the first release, read with their default when absent: `helm upgrade
--reuse-values` from an older release renders with that release's values, which lack them.
*/}}
{{- define "ha-injector.metricsSecure" -}}
{{- dig "secure" true .Values.metrics | toString }}
{{- end }}
