{{/*
The chart's name.
*/}}
{{- define "ecs-defender-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name for the release's objects, at most 63 characters.
*/}}
{{- define "ecs-defender-operator.fullname" -}}
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

{{/*
chart label: name-version.
*/}}
{{- define "ecs-defender-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "ecs-defender-operator.labels" -}}
helm.sh/chart: {{ include "ecs-defender-operator.chart" . }}
{{ include "ecs-defender-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "ecs-defender-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecs-defender-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "ecs-defender-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecs-defender-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "ecs-defender-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC rules: exactly the Kubernetes API calls the operator makes, nothing more.
Shared by the ClusterRole (all namespaces) and the Role (watchNamespace).
*/}}
{{- define "ecs-defender-operator.rules" -}}
# Watch the resources (and the startup check that the CRD is installed); finalizers are set by a
# merge patch on the resource.
- apiGroups: ["ecsdefender.io"]
  resources: ["ecsdefenderdeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by server-side apply on the status subresource.
- apiGroups: ["ecsdefender.io"]
  resources: ["ecsdefenderdeployments/status"]
  verbs: ["patch"]
# Setting and removing our finalizer.
- apiGroups: ["ecsdefender.io"]
  resources: ["ecsdefenderdeployments/finalizers"]
  verbs: ["update"]
# The AWS and Console credentials Secrets the resources name: read by name; with watchSecrets,
# also listed and watched as metadata only, so a Secret created or fixed later takes effect at once.
- apiGroups: [""]
  resources: ["secrets"]
  {{- if .Values.watchSecrets }}
  verbs: ["get", "list", "watch"]
  {{- else }}
  verbs: ["get"]
  {{- end }}
# Events on the resources (kube-rs Recorder: create, then patch to count repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Leader election: the Lease's name and namespace.
*/}}
{{- define "ecs-defender-operator.leaseName" -}}
{{- default (include "ecs-defender-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "ecs-defender-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
Rate budgets: the rateLimits.aws map as AWS_RATE_LIMITS ("ecs=15/45,iam=off"), in key order.
*/}}
{{- define "ecs-defender-operator.awsRateLimits" -}}
{{- $entries := list }}
{{- range $service, $limit := . }}
{{- $entries = append $entries (printf "%s=%v" $service $limit) }}
{{- end }}
{{- join "," $entries }}
{{- end }}
