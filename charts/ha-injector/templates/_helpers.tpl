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
The certificate mode after checking that certManager.enabled and certs.mode agree and
that each mode has what it needs; fails the render with a message naming the values.
*/}}
{{- define "ha-injector.certMode" -}}
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
