{{/*
kubefence.name: the chart name, or nameOverride. Cut to 63 characters
because Kubernetes label values and DNS labels allow no more.
*/}}
{{- define "kubefence.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
kubefence.fullname: the prefix of every object name. Cut to 47 characters so
that the Service name (this prefix and "-webhook") stays within the 63
characters of a DNS label, with room to spare for the other suffixes.
*/}}
{{- define "kubefence.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
kubefence.chart: chart name and version for the helm.sh/chart label.
*/}}
{{- define "kubefence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
kubefence.labels: the common labels of every object. Pass a dict with
"context" (the root context) and "component".
*/}}
{{- define "kubefence.labels" -}}
helm.sh/chart: {{ include "kubefence.chart" .context }}
{{ include "kubefence.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: kubefence
{{- end }}

{{/*
kubefence.selectorLabels: the labels that select one component's pods.
Pass a dict with "context" and "component".
*/}}
{{- define "kubefence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubefence.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
kubefence.image: the image reference for one entry of .Values.image. Pass a
dict with "context" and "image". A digest wins over the tag; an empty tag
means the chart's appVersion.
*/}}
{{- define "kubefence.image" -}}
{{- $tag := default .context.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
kubefence.webhookName: the name of the webhook Deployment, Service,
PodDisruptionBudget and policy ConfigMap.
*/}}
{{- define "kubefence.webhookName" -}}
{{- printf "%s-webhook" (include "kubefence.fullname" .) }}
{{- end }}

{{/*
kubefence.tlsSecretName: the Secret (type kubernetes.io/tls) with the webhook's
serving certificate, key and CA certificate.
*/}}
{{- define "kubefence.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "kubefence.fullname" .) }}
{{- end }}

{{/*
kubefence.caSecretName: the Secret (type kubernetes.io/tls) with the CA that
signs the serving certificate.
*/}}
{{- define "kubefence.caSecretName" -}}
{{- printf "%s-webhook-ca" (include "kubefence.fullname" .) }}
{{- end }}

{{/*
kubefence.certsName: the name of the certificate hook Job and its
ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding.
Cluster-scoped names carry the namespace so that two releases of the same
name in different namespaces do not collide.
*/}}
{{- define "kubefence.certsName" -}}
{{- printf "%s-certs" (include "kubefence.fullname" .) }}
{{- end }}

{{/*
kubefence.webhookConfigName: the cluster-scoped MutatingWebhookConfiguration
name, with the release namespace so that releases in different namespaces
do not collide.
*/}}
{{- define "kubefence.webhookConfigName" -}}
{{- printf "%s-%s" (include "kubefence.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/*
kubefence.runtimeClasses: the runtimeClasses entries in force, as YAML
{items: [...]}: every entry when kata.enabled, else the entries without
`kata: true`. Everything that names runtime classes or handlers reads this
one list.
*/}}
{{- define "kubefence.runtimeClasses" -}}
{{- $items := list }}
{{- range .Values.runtimeClasses }}
{{- if or (not .kata) $.Values.kata.enabled }}
{{- $items = append $items . }}
{{- end }}
{{- end }}
{{- if not $items }}
{{- fail "runtimeClasses: no entry left (with kata.enabled=false every entry has kata: true); add a non-Kata runtime class" }}
{{- end }}
{{- toYaml (dict "items" $items) }}
{{- end }}

{{/*
kubefence.exemptNamespaces: the namespaces the API server never sends to the
webhook, as YAML {items: [...]}: the Kubernetes system namespaces (always),
policy.exemptNamespaces and the release namespace, without duplicates.
*/}}
{{- define "kubefence.exemptNamespaces" -}}
{{- $system := list "kube-system" "kube-public" "kube-node-lease" }}
{{- $names := concat $system .Values.policy.exemptNamespaces (list .Release.Namespace) | uniq }}
{{- toYaml (dict "items" $names) }}
{{- end }}

{{/*
kubefence.policy: the webhook's policy document (YAML), in the shape that
kubefence.common.policy.load_policy reads.
*/}}
{{- define "kubefence.policy" -}}
{{- $classes := (include "kubefence.runtimeClasses" . | fromYaml).items }}
{{- $names := list }}
{{- $kata := list }}
{{- range $classes }}
{{- $names = append $names .name }}
{{- if .kata }}
{{- $kata = append $kata .name }}
{{- end }}
{{- end }}
{{- /* Checks the policy loader would make, so a bad value fails the install instead of the webhook pods. */}}
{{- if ne (len $names) (len (uniq $names)) }}
{{- fail (printf "runtimeClasses: duplicate name in %v" $names) }}
{{- end }}
{{- if not (has .Values.policy.defaultProfile .Values.policy.allowedProfiles) }}
{{- fail (printf "policy.defaultProfile: %q is not in policy.allowedProfiles %v" .Values.policy.defaultProfile .Values.policy.allowedProfiles) }}
{{- end }}
{{- range $index, $rule := .Values.policy.namespaces }}
{{- $allowed := $rule.allowedProfiles | default $.Values.policy.allowedProfiles }}
{{- $default := $rule.defaultProfile | default $.Values.policy.defaultProfile }}
{{- if not (has $default $allowed) }}
{{- fail (printf "policy.namespaces[%d]: default profile %q is not in the allowed profiles %v" $index $default $allowed) }}
{{- end }}
{{- end }}
{{- $volume := dict "hostPath" (dict "path" .Values.hostDir "type" "Directory") }}
{{- if eq .Values.nonoVolume.type "image" }}
{{- if not .Values.nonoVolume.image.reference }}
{{- fail "nonoVolume.image.reference: required when nonoVolume.type is image" }}
{{- end }}
{{- $volume = dict "image" (dict "reference" .Values.nonoVolume.image.reference "pullPolicy" .Values.nonoVolume.image.pullPolicy) }}
{{- end }}
{{- $policy := dict
  "runtimeClasses" $names
  "kataRuntimeClasses" $kata
  "defaultProfile" .Values.policy.defaultProfile
  "allowedProfiles" .Values.policy.allowedProfiles
  "onInvalidProfile" .Values.policy.onInvalidProfile
  "exemptNamespaces" .Values.policy.exemptNamespaces
  "namespaces" .Values.policy.namespaces
  "ephemeralContainers" .Values.policy.ephemeralContainers
  "nonoVolume" $volume
  "pluginName" .Values.nri.pluginName
}}
{{- toYaml $policy }}
{{- end }}

{{/*
kubefence.nriConfig: the NRI plugin's TOML configuration. Strings and string
lists are written with toJson, whose escapes are valid in TOML basic strings.
allowed_profiles is the union, in first-seen order, of policy.allowedProfiles
and every namespace rule's allowedProfiles.
*/}}
{{- define "kubefence.nriConfig" -}}
{{- $classes := (include "kubefence.runtimeClasses" . | fromYaml).items }}
{{- $handlers := list }}
{{- range $classes }}
{{- $handlers = append $handlers .handler }}
{{- end }}
{{- /* A namespace rule's allowedProfiles replaces the cluster list in its
namespaces, but the plugin has one list for every pod: the union, so a
profile allowed in one namespace is not rejected on the node. The webhook
enforces the per-namespace lists on CREATE and the annotation guard keeps
them from changing afterwards. */}}
{{- $profiles := .Values.policy.allowedProfiles }}
{{- range .Values.policy.namespaces }}
{{- $profiles = concat $profiles (.allowedProfiles | default list) }}
{{- end -}}
# kubefence NRI plugin configuration, rendered by the Helm chart.
socket_path = {{ .Values.nri.socketPath | toJson }}
plugin_name = {{ .Values.nri.pluginName | toJson }}
plugin_index = {{ .Values.nri.pluginIndex | toJson }}
runtime_handlers = {{ $handlers | uniq | toJson }}
default_profile = {{ .Values.policy.defaultProfile | toJson }}
allowed_profiles = {{ $profiles | uniq | toJson }}
on_missing_profile = {{ .Values.nri.onMissingProfile | toJson }}
nono_host_dir = {{ .Values.hostDir | toJson }}
state_dir = {{ .Values.nri.stateDir | toJson }}
{{- if .Values.nri.seccompProfile }}
seccomp_profile = {{ .Values.nri.seccompProfile | toJson }}
{{- end }}
validator = {{ .Values.nri.validator | toJson }}
{{- /* node-setup installs the hook script next to nono, which it skips for image volumes. */}}
verify_hook = {{ and .Values.nri.verifyHook (ne .Values.nonoVolume.type "image") | toJson }}
metrics_address = {{ printf "0.0.0.0:%d" (int .Values.nri.metricsPort) | toJson }}
{{- end }}

{{/*
kubefence.matchCondition: the CEL expression that lets only candidate pods
reach the webhook: pods whose runtimeClassName is opted in, and pods in
namespaces that a policy rule with `enforce: true` matches. It pre-filters
only; the webhook still decides (a namespace matched by an earlier rule
without enforce also passes here). The object is the Pod for both CREATE
of pods and UPDATE of pods/ephemeralcontainers. Globs become RE2 patterns:
`*` -> `.*`, `?` -> `.`, `[!` -> `[^`; namespace names contain nothing else
that RE2 treats specially.
*/}}
{{- define "kubefence.matchCondition" -}}
{{- $classes := (include "kubefence.runtimeClasses" . | fromYaml).items }}
{{- $names := list }}
{{- range $classes }}
{{- $names = append $names (printf "'%s'" .name) }}
{{- end }}
{{- $terms := list (printf "(has(object.spec) && has(object.spec.runtimeClassName) && object.spec.runtimeClassName in [%s])" (join ", " $names)) }}
{{- $exact := list }}
{{- range .Values.policy.namespaces }}
{{- if .enforce }}
{{- if regexMatch "[*?\\[]" .match }}
{{- $pattern := .match | replace "[!" "[^" | replace "*" ".*" | replace "?" "." }}
{{- $terms = append $terms (printf "request.namespace.matches('^%s$')" $pattern) }}
{{- else }}
{{- $exact = append $exact (printf "'%s'" .match) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $exact }}
{{- $terms = append $terms (printf "request.namespace in [%s]" (join ", " $exact)) }}
{{- end }}
{{- join " || " $terms }}
{{- end }}

{{/*
kubefence.annotationGuardName: the cluster-scoped ValidatingAdmissionPolicy
and its binding, with the release namespace so that releases in different
namespaces do not collide.
*/}}
{{- define "kubefence.annotationGuardName" -}}
{{- printf "%s-annotation-guard" (include "kubefence.webhookConfigName" .) | trunc 253 | trimSuffix "-" }}
{{- end }}
