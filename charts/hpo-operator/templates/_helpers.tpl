{{/*
hpo-operator.name: the chart name, or nameOverride; used in the app.kubernetes.io/name label.
Kubernetes names are limited to 63 characters, so it is cut there.
*/}}
{{- define "hpo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
hpo-operator.fullname: the prefix of every object name. It is fullnameOverride when set; otherwise
`<release>-<name>`, or the release name alone when it already contains the chart name (so
`helm install hpo-operator .` gives `hpo-operator`, not `hpo-operator-hpo-operator`).
Cut at 52 characters so that the longest suffix this chart appends ("-postgresql", 11) still fits 63.
*/}}
{{- define "hpo-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
hpo-operator.chart: `<chart>-<version>` for the helm.sh/chart label ("+" is not allowed in labels).
*/}}
{{- define "hpo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
hpo-operator.labels: the recommended labels every object carries, plus commonLabels.
Call it with the root context.
*/}}
{{- define "hpo-operator.labels" -}}
helm.sh/chart: {{ include "hpo-operator.chart" . }}
{{ include "hpo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hpo-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
hpo-operator.selectorLabels: the labels that never change between upgrades, so they can select pods.
Components (operator, postgresql, dashboard) add app.kubernetes.io/component next to them.
*/}}
{{- define "hpo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hpo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
hpo-operator.serviceAccountName: the operator's ServiceAccount, created by the chart or named by the user.
*/}}
{{- define "hpo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hpo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
hpo-operator.image: `repository:tag` or `repository@digest` of the operator image;
the tag defaults to the chart's appVersion.
*/}}
{{- define "hpo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
hpo-operator.trialImage: the default trial image (HPO_TRIAL_IMAGE); the tag defaults to appVersion.
*/}}
{{- define "hpo-operator.trialImage" -}}
{{- printf "%s:%s" .Values.trialImage.repository (default .Chart.AppVersion .Values.trialImage.tag) }}
{{- end }}

{{/*
hpo-operator.postgresql.fullname: the bundled PostgreSQL's StatefulSet, Service and Secret name.
*/}}
{{- define "hpo-operator.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "hpo-operator.fullname" .) }}
{{- end }}

{{/*
hpo-operator.storageSecret: the Secret and key holding the default storage URL, as a dict
{name, key}; empty name when storage.mode is `none`. The operator, the dashboard and NOTES.txt
all read it from here, so they always point at the same storage.
*/}}
{{- define "hpo-operator.storageSecret" -}}
{{- if eq .Values.storage.mode "bundled" }}
{{- dict "name" (include "hpo-operator.postgresql.fullname" .) "key" "url" | toJson }}
{{- else if eq .Values.storage.mode "external" }}
{{- $name := required "storage.external.existingSecret is required when storage.mode is external: name a Secret holding the storage URL" .Values.storage.external.existingSecret }}
{{- dict "name" $name "key" .Values.storage.external.key | toJson }}
{{- else }}
{{- dict "name" "" "key" "" | toJson }}
{{- end }}
{{- end }}

{{/*
hpo-operator.watchNamespaces: the namespaces the operator handles, as a JSON list (the schema has
checked the names and refused duplicates); an empty list means the whole cluster.
*/}}
{{- define "hpo-operator.watchNamespaces" -}}
{{- .Values.operator.watchNamespaces | default list | toJson }}
{{- end }}

{{/*
hpo-operator.rbac: one concern's permissions as RBAC objects. Called with a dict:
  root     the chart's root context
  concern  a short name ("studies", "trials", ...), the suffix of the object names
  comment  a sentence on why the operator needs these permissions
  rules    the PolicyRules, as YAML text
  cluster  true for rules that are cluster-wide by nature, whatever watchNamespaces says
Cluster-wide mode (watchNamespaces empty) or cluster: a ClusterRole and a ClusterRoleBinding.
Namespaced mode: a Role and a RoleBinding in each watched namespace, and nothing cluster-wide.
*/}}
{{- define "hpo-operator.rbac" -}}
{{- $root := .root }}
{{- $name := printf "%s-%s" (include "hpo-operator.fullname" $root) .concern }}
{{- $namespaces := include "hpo-operator.watchNamespaces" $root | fromJsonArray }}
{{- if or .cluster (not $namespaces) }}
---
# {{ .comment }}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "hpo-operator.labels" $root | nindent 4 }}
    app.kubernetes.io/component: operator
rules:
  {{- .rules | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "hpo-operator.labels" $root | nindent 4 }}
    app.kubernetes.io/component: operator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "hpo-operator.serviceAccountName" $root }}
    namespace: {{ $root.Release.Namespace }}
{{- else }}
{{- range $namespaces }}
---
# {{ $.comment }}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ . }}
  labels:
    {{- include "hpo-operator.labels" $root | nindent 4 }}
    app.kubernetes.io/component: operator
rules:
  {{- $.rules | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ . }}
  labels:
    {{- include "hpo-operator.labels" $root | nindent 4 }}
    app.kubernetes.io/component: operator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "hpo-operator.serviceAccountName" $root }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
{{- end }}

{{/*
hpo-operator.leaderElection: "true" when the replicas elect a leader through a Lease (operator.leaderElection
.enabled, or more than one replica), else empty. Checks the timings the way the operator does at start-up.
*/}}
{{- define "hpo-operator.leaderElection" -}}
{{- $le := .Values.operator.leaderElection }}
{{- if or $le.enabled (gt (int .Values.operator.replicas) 1) }}
{{- if not (gt (float64 $le.renewDeadline) (float64 $le.retryPeriod)) }}
{{- fail "operator.leaderElection.renewDeadline must be longer than operator.leaderElection.retryPeriod" }}
{{- end }}
{{- if not (gt (float64 $le.leaseDuration) (float64 $le.renewDeadline)) }}
{{- fail "operator.leaderElection.leaseDuration must be longer than operator.leaderElection.renewDeadline: a leader that cannot renew must stop before a standby may take over" }}
{{- end }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/*
hpo-operator.leaseName: the Lease the replicas compete for, in the release namespace.
*/}}
{{- define "hpo-operator.leaseName" -}}
{{- printf "%s-leader" (include "hpo-operator.fullname" .) }}
{{- end }}
