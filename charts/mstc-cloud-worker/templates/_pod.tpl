{{/*
The handler's pod spec, shared by the consumer Deployment, the HTTP Deployment and the
ScaledJob so that their security, settings and secrets can never drift apart.

Call with a dict:
  root           the chart's root context ($)
  args           list of arguments after the `cloud-worker` entrypoint
  resources      container resources
  probes         true: liveness and readiness probes; false: liveness only (a Job's pod
                 is in no Service, so readiness would mean nothing)
  http           true for `cloud-worker serve`: probes on their own port, the token file
  restartPolicy  optional; Jobs need Never or OnFailure
*/}}
{{- define "mstc-cloud-worker.podSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
serviceAccountName: {{ include "mstc-cloud-worker.serviceAccountName" $root }}
# The handler talks to the API server with this token.
automountServiceAccountToken: true
terminationGracePeriodSeconds: {{ include "mstc-cloud-worker.terminationGracePeriodSeconds" $root }}
{{- with .restartPolicy }}
restartPolicy: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
containers:
  - name: cloud-worker
    image: {{ include "mstc-cloud-worker.image" $root | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    ports:
      - name: http
        containerPort: {{ $v.config.httpPort }}
        protocol: TCP
      {{- if and .http $v.http.probePort }}
      - name: probes
        containerPort: {{ $v.http.probePort }}
        protocol: TCP
      {{- end }}
    envFrom:
      - configMapRef:
          name: {{ include "mstc-cloud-worker.fullname" $root }}
      {{- /* A Secret in another namespace (config.jobNamespace) cannot be read by these pods. */}}
      {{- if and $v.bucket.handlerAccess (eq (include "mstc-cloud-worker.jobNamespace" $root) $root.Release.Namespace) }}
      {{- with include "mstc-cloud-worker.bucketSecretName" $root }}
      # The bucket credentials, for the Job's log object (README, "Reply").
      - secretRef:
          name: {{ . }}
      {{- end }}
      {{- end }}
    env:
      - name: CLOUD_WORKER_AMQP_URL
        valueFrom:
          secretKeyRef:
            name: {{ include "mstc-cloud-worker.brokerSecretName" $root }}
            key: {{ $v.broker.amqpUrlKey }}
      {{- if .http }}
      - name: CLOUD_WORKER_HTTP_PROBE_PORT
        value: {{ $v.http.probePort | toString | quote }}
      - name: CLOUD_WORKER_HTTP_AUTH
        value: {{ $v.http.auth.mode | quote }}
      {{- if eq $v.http.auth.mode "token" }}
      - name: CLOUD_WORKER_HTTP_TOKEN_FILE
        value: /etc/cloud-worker/http-token/{{ $v.http.auth.secretKey }}
      {{- end }}
      {{- end }}
      {{- with $v.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- $probePort := and .http $v.http.probePort }}
    {{- with $v.livenessProbe }}
    livenessProbe:
      {{- include "mstc-cloud-worker.probe" (dict "probe" . "port" $probePort) | nindent 6 }}
    {{- end }}
    {{- if .probes }}
    {{- with $v.readinessProbe }}
    readinessProbe:
      {{- include "mstc-cloud-worker.probe" (dict "probe" . "port" $probePort) | nindent 6 }}
    {{- end }}
    {{- end }}
    {{- with .resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      {{- if and .http (eq $v.http.auth.mode "token") }}
      - name: http-token
        mountPath: /etc/cloud-worker/http-token
        readOnly: true
      {{- end }}
      {{- if include "mstc-cloud-worker.profiled" $root }}
      - name: profiles
        mountPath: {{ include "mstc-cloud-worker.profilesDir" $root }}
        readOnly: true
      {{- end }}
volumes:
  # The root filesystem is read-only; gunicorn and tempfile need a writable /tmp.
  - name: tmp
    emptyDir:
      sizeLimit: {{ $v.tmpSizeLimit }}
  {{- if and .http (eq $v.http.auth.mode "token") }}
  # A mounted Secret (no subPath) is updated in place by the kubelet: rotation needs no restart.
  - name: http-token
    secret:
      secretName: {{ include "mstc-cloud-worker.httpTokenSecretName" $root }}
      defaultMode: 0440
  {{- end }}
  {{- if include "mstc-cloud-worker.profiled" $root }}
  # The Job profiles; a change rolls the pods (checksum/profiles), which prove them at start-up.
  - name: profiles
    configMap:
      name: {{ include "mstc-cloud-worker.profilesConfigMap" $root }}
  {{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod annotations: the user's, plus a checksum that rolls the pods when settings change. */}}
{{- define "mstc-cloud-worker.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if include "mstc-cloud-worker.profiled" . }}
checksum/profiles: {{ include (print .Template.BasePath "/profiles-configmap.yaml") . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The KEDA rabbitmq trigger. protocol http reads the queue through the management API,
whose message count includes unacked deliveries: the requests running handlers still
hold. So KEDA never scales away a busy pod's share of the work, and a ScaledJob never
starts a second handler for a request already being handled. Call with
(dict "root" $ "value" N), N = requests one pod (or Job) takes; with "queue" and "name",
for another queue than the work queue (a Job profile's).
*/}}
{{- define "mstc-cloud-worker.kedaTrigger" -}}
- type: rabbitmq
  name: {{ .name | default "work-queue" }}
  metadata:
    {{- range $key, $value := .root.Values.keda.triggerMetadata }}
    {{ $key }}: {{ $value | toString | quote }}
    {{- end }}
    protocol: http
    mode: QueueLength
    value: {{ .value | toString | quote }}
    queueName: {{ .queue | default .root.Values.config.queue | quote }}
    excludeUnacknowledged: "false"
    activationValue: {{ .root.Values.keda.activationValue | toString | quote }}
  authenticationRef:
    name: {{ include "mstc-cloud-worker.fullname" .root }}
{{- end }}

{{/* A probe; with a port, its httpGet goes there (the HTTP mode's own probe listener). */}}
{{- define "mstc-cloud-worker.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .port $probe.httpGet }}
{{- $_ := set $probe.httpGet "port" "probes" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
One trigger per Job profile with maxInFlight, on the profile's queue (<queue>.profile.<name>):
its requests wait there, not in the work queue. Call with (dict "root" $ "value" N); without a
value, each profile's maxInFlight (the requests of it one consumer pod takes).
*/}}
{{- define "mstc-cloud-worker.profileTriggers" -}}
{{- $root := .root }}
{{- $value := .value }}
{{- range $name, $profile := (($root.Values.profiles | default dict).profiles | default dict) }}
{{- if and $profile $profile.maxInFlight }}
{{ include "mstc-cloud-worker.kedaTrigger" (dict "root" $root "value" ($value | default $profile.maxInFlight) "queue" (printf "%s.profile.%s" $root.Values.config.queue $name) "name" (printf "profile-%s" $name)) }}
{{- end }}
{{- end }}
{{- end }}
