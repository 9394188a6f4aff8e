{{/*
Names, labels and the few derived numbers every template shares.
*/}}

{{- define "mstc-cloud-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: 63 characters at most (some Kubernetes name fields are limited to that).
Leaves room for the "-broker", "-bucket", "-http" and "-job" suffixes below.
*/}}
{{- define "mstc-cloud-worker.fullname" -}}
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

{{- define "mstc-cloud-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-cloud-worker.labels" -}}
helm.sh/chart: {{ include "mstc-cloud-worker.chart" . }}
{{ include "mstc-cloud-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mstc-cloud-worker
{{- end }}

{{- define "mstc-cloud-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mstc-cloud-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mstc-cloud-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mstc-cloud-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of the Jobs the handler creates; empty = the namespace's default. */}}
{{- define "mstc-cloud-worker.jobServiceAccountName" -}}
{{- if .Values.jobServiceAccount.create }}
{{- default (printf "%s-job" (include "mstc-cloud-worker.fullname" .)) .Values.jobServiceAccount.name }}
{{- else }}
{{- .Values.jobServiceAccount.name }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.jobNamespace" -}}
{{- default .Release.Namespace .Values.config.jobNamespace }}
{{- end }}

{{- define "mstc-cloud-worker.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when KEDA objects are rendered: forced by keda.enabled, or auto-detected. */}}
{{- define "mstc-cloud-worker.kedaEnabled" -}}
{{- $enabled := toString .Values.keda.enabled }}
{{- if eq $enabled "auto" }}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1" }}true{{ end }}
{{- else if eq $enabled "true" }}true
{{- end }}
{{- end }}

{{/* Secret with the broker URLs: the user's, or the dev one this chart creates. */}}
{{- define "mstc-cloud-worker.brokerSecretName" -}}
{{- if .Values.broker.existingSecret }}
{{- .Values.broker.existingSecret }}
{{- else if .Values.broker.amqpUrl }}
{{- printf "%s-broker" (include "mstc-cloud-worker.fullname" .) }}
{{- else }}
{{- fail "set broker.existingSecret to a Secret holding the broker URLs (or, for dev, broker.amqpUrl)" }}
{{- end }}
{{- end }}

{{/* Secret injected into every Job; empty = none. */}}
{{- define "mstc-cloud-worker.bucketSecretName" -}}
{{- if .Values.bucket.existingSecret }}
{{- .Values.bucket.existingSecret }}
{{- else if .Values.bucket.credentials }}
{{- printf "%s-bucket" (include "mstc-cloud-worker.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The kubelet sends SIGKILL terminationGracePeriodSeconds after SIGTERM. The handler gives
in-flight work config.shutdownGraceSeconds, then closes its channel and connection, so the
period is derived from that setting, never set on its own.
*/}}
{{- define "mstc-cloud-worker.terminationGracePeriodSeconds" -}}
{{- add (int .Values.config.shutdownGraceSeconds) (int .Values.terminationGracePaddingSeconds) }}
{{- end }}

{{/*
A --once handler lives for: waiting for its message (idleExitSeconds), its Job's image
pull grace, the longest Job it may run, then its own shutdown; 300 s of slack on top.
The cluster must never cut it short, or the Job's reply is lost until redelivery.
*/}}
{{- define "mstc-cloud-worker.scaledJobDeadlineSeconds" -}}
{{- $s := .Values.keda.scaledJob }}
{{- if $s.activeDeadlineSeconds }}
{{- if le (int $s.activeDeadlineSeconds) (mul (int .Values.config.maxTimeoutMinutes) 60 | int) }}
{{- fail "keda.scaledJob.activeDeadlineSeconds must exceed config.maxTimeoutMinutes in seconds" }}
{{- end }}
{{- int $s.activeDeadlineSeconds }}
{{- else }}
{{- $c := .Values.config }}
{{- add (mul (int $c.maxTimeoutMinutes) 60) (int $s.idleExitSeconds) (int $c.imagePullGraceSeconds) (int $c.shutdownGraceSeconds) 300 }}
{{- end }}
{{- end }}

{{/* The Secret holding the HTTP mode's bearer tokens (empty when authentication is off). */}}
{{- define "mstc-cloud-worker.httpTokenSecretName" -}}
{{- if eq .Values.http.auth.mode "token" }}
{{- default (printf "%s-http-token" (include "mstc-cloud-worker.fullname" .)) .Values.http.auth.existingSecret }}
{{- end }}
{{- end }}

{{/* "true" when the values define Job profiles (a profiles file is rendered and mounted). */}}
{{- define "mstc-cloud-worker.profiled" -}}
{{- if (.Values.profiles | default dict).profiles }}true{{ end }}
{{- end }}

{{- define "mstc-cloud-worker.profilesConfigMap" -}}
{{- printf "%s-profiles" (include "mstc-cloud-worker.fullname" .) }}
{{- end }}

{{/* Where the handler pods find the profiles file (CLOUD_WORKER_PROFILES_FILE). */}}
{{- define "mstc-cloud-worker.profilesDir" -}}
/etc/cloud-worker/profiles
{{- end }}

{{/*
Label matchers of this release's handler metrics, as the PodMonitor labels its targets
(metrics.prometheusRule.selector overrides them).
*/}}
{{- define "mstc-cloud-worker.metricsSelector" -}}
{{- default (printf "namespace=%q, job=%q" .Release.Namespace .Release.Name) .Values.metrics.prometheusRule.selector }}
{{- end }}

{{/*
Label matchers of a queue in RabbitMQ's own metrics: call with a dict of root and queue.
*/}}
{{- define "mstc-cloud-worker.queueSelector" -}}
{{- printf "queue=%q" .queue }}{{ with .root.Values.metrics.prometheusRule.rabbitmqSelector }}, {{ . }}{{ end }}
{{- end }}
