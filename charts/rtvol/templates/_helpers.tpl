{{/* Names ---------------------------------------------------------------- */}}

{{- define "rtvol.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rtvol.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "rtvol.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "rtvol.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "feature"). */}}
{{- define "rtvol.componentName" -}}
{{- printf "%s-%s" (include "rtvol.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rtvol.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rtvol.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: (dict "root" $ "component" "gateway") ---------------------------- */}}

{{- define "rtvol.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtvol.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "rtvol.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "rtvol.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rtvol
{{- end -}}

{{/* metadata: name, namespace, labels; (dict "root" $ "component" "x" "name" optional) */}}
{{- define "rtvol.metadata" -}}
name: {{ .name | default (include "rtvol.componentName" .) }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "rtvol.labels" . | nindent 2 }}
{{- end -}}

{{/* Images: (dict "root" $ "image" .Values.feature.image) --------------------- */}}
{{- define "rtvol.image" -}}
image: {{ printf "%s%s:%s" .root.Values.imageRegistry .image.repository .image.tag | quote }}
imagePullPolicy: {{ .image.pullPolicy | default "IfNotPresent" }}
{{- end -}}

{{/* Security ------------------------------------------------------------------ */}}

{{- define "rtvol.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "rtvol.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* The pod-level fields every component shares; (dict "root" $ "scheduling" .Values.feature) */}}
{{- define "rtvol.podCommon" -}}
serviceAccountName: {{ include "rtvol.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountToken }}
enableServiceLinks: false
{{ include "rtvol.podSecurityContext" .root }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .scheduling.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes ---------------------------------------------------------------------- */}}

{{/* grpc.health.v1 probes: (dict "root" $ "ports" .Values.model.ports); with TLS on the
     plaintext health-only port (kubelet's gRPC probe cannot speak TLS), else the gRPC port. */}}
{{- define "rtvol.grpcProbes" -}}
{{- $port := ternary .ports.health .ports.grpc .root.Values.tls.enabled -}}
{{- include "rtvol.grpcProbesOn" (dict "port" $port "startupFailures" .startupFailures) }}
{{- end -}}

{{- define "rtvol.grpcProbesOn" -}}
startupProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: {{ .startupFailures | default 60 }}
livenessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* HTTP probes on the gateway's /livez and /readyz: (dict "port" 8080 "scheme" "HTTPS") */}}
{{- define "rtvol.httpProbes" -}}
startupProbe:
  httpGet: {path: /livez, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /livez, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* TLS ---------------------------------------------------------------------------- */}}

{{/* A component's certificate Secret: (dict "root" $ "component" "feature") */}}
{{- define "rtvol.tlsSecretName" -}}
{{- index .root.Values.tls.existingSecret .component | default (printf "%s-tls" (include "rtvol.componentName" .)) -}}
{{- end -}}

{{/* The certificate as files under /etc/rtvol/tls (the kubelet updates them in place on renewal). */}}
{{- define "rtvol.tlsVolume" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "rtvol.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end -}}

{{- define "rtvol.tlsMount" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/rtvol/tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* Environment ----------------------------------------------------------------- */}}

{{/* The chart's Redis as a service's ACL user (its password: rtvol.redisPasswordVolume):
     (dict "root" $ "user" "rtvol-feature") */}}
{{- define "rtvol.redisUrl" -}}
{{- $root := .root -}}
{{- if $root.Values.redis.enabled -}}
{{- printf "%s://%s@%s:%d/0" (ternary "rediss" "redis" $root.Values.tls.enabled) .user (include "rtvol.componentName" (dict "root" $root "component" "redis")) (int $root.Values.redis.port) -}}
{{- else -}}
{{- required "redis.externalUrl is required when redis.enabled is false" $root.Values.redis.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* A service's Redis password as the file /etc/rtvol/redis/password: (dict "root" $ "user" "rtvol-feature") */}}
{{- define "rtvol.redisPasswordVolume" -}}
{{- if .root.Values.redis.enabled }}
- name: redis-password
  secret:
    secretName: {{ include "rtvol.secretName" (dict "root" .root "name" .root.Values.redis.auth.existingSecret "suffix" "redis") }}
    defaultMode: 0440
    items:
      - {key: {{ .user | trimPrefix "rtvol-" }}-password, path: password}
{{- end }}
{{- end -}}

{{- define "rtvol.redisPasswordMount" -}}
{{- if .Values.redis.enabled }}
- {name: redis-password, mountPath: /etc/rtvol/redis, readOnly: true}
{{- end }}
{{- end -}}

{{/* A Secret's name: the value given, else <fullname>-<suffix>: (dict "root" $ "name" "" "suffix" "auth") */}}
{{- define "rtvol.secretName" -}}
{{- .name | default (printf "%s-%s" (include "rtvol.fullname" .root) .suffix) -}}
{{- end -}}

{{/* The auth Secret as files under /etc/rtvol/auth: api-keys always, gateway-key only for the gateway. */}}
{{- define "rtvol.authVolume" -}}
{{- if .root.Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "rtvol.secretName" (dict "root" .root "name" .root.Values.auth.existingSecret "suffix" "auth") }}
    defaultMode: 0440
    items:
      - {key: api-keys, path: api-keys}
      {{- if .gatewayKey }}
      - {key: gateway-key, path: gateway-key}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "rtvol.authMount" -}}
{{- if .Values.auth.enabled }}
- {name: auth, mountPath: /etc/rtvol/auth, readOnly: true}
{{- end }}
{{- end -}}

{{/* env for an rtvol container: (dict "root" $ "component" "feature" "env" (dict ...) "extra" .Values.feature.extraEnv
     "redisUser" "rtvol-feature" "tls" "mtls"); redisUser: the container reads Redis as that ACL user;
     tls (with tls.enabled): "server" serves and calls with the certificate, "mtls" also demands one of callers */}}
{{- define "rtvol.env" -}}
{{- $root := .root -}}
{{- $env := dict "RTVOL_HOST" "0.0.0.0" "RTVOL_LOG_LEVEL" $root.Values.logLevel "OTEL_SERVICE_NAME" (printf "rtvol-%s" .component) "OTEL_RESOURCE_ATTRIBUTES" (printf "k8s.namespace.name=%s,service.namespace=rtvol" $root.Release.Namespace) -}}
{{- if $root.Values.otel.endpoint -}}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $root.Values.otel.endpoint -}}
{{- $_ := set $env "OTEL_TRACES_SAMPLER" $root.Values.otel.sampler -}}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" $root.Values.otel.samplerArg -}}
{{- else -}}
{{- $_ := set $env "OTEL_TRACES_EXPORTER" "none" -}}
{{- end -}}
{{- $_ := set $env "RTVOL_GRPC_REFLECTION" ($root.Values.grpcReflection | toString) -}}
{{- if $root.Values.auth.enabled -}}
{{- $_ := set $env "RTVOL_API_KEYS_FILE" "/etc/rtvol/auth/api-keys" -}}
{{- end -}}
{{- if and .redisUser $root.Values.redis.enabled -}}
{{- $_ := set $env "RTVOL_REDIS_PASSWORD_FILE" "/etc/rtvol/redis/password" -}}
{{- end -}}
{{- if and .tls $root.Values.tls.enabled -}}
{{- $_ := set $env "RTVOL_TLS_CERT" "/etc/rtvol/tls/tls.crt" -}}
{{- $_ := set $env "RTVOL_TLS_KEY" "/etc/rtvol/tls/tls.key" -}}
{{- $_ := set $env "RTVOL_TLS_CA" "/etc/rtvol/tls/ca.crt" -}}
{{- if eq .tls "mtls" -}}
{{- $_ := set $env "RTVOL_TLS_CLIENT_CA" "/etc/rtvol/tls/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- $env = merge (dict) .extra $root.Values.extraEnv .env $env -}}
env:
{{- range $k := keys $env | sortAlpha }}
  - name: {{ $k }}
    value: {{ index $env $k | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volumes ----------------------------------------------------------------------- */}}

{{- define "rtvol.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ . }}
{{- end -}}

{{- define "rtvol.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The model repository volume (PVC or the emptyDir the init container fills). */}}
{{- define "rtvol.modelRepositoryVolume" -}}
{{- $repo := .Values.model.repository -}}
- name: model-repository
{{- if eq $repo.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ $repo.pvc.existingClaim | default (include "rtvol.componentName" (dict "root" . "component" "models")) }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ $repo.init.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "rtvol.modelRepositoryInit" -}}
{{- $repo := .Values.model.repository -}}
{{- if eq $repo.source "init" }}
initContainers:
  - name: model-repository
    {{- include "rtvol.image" (dict "root" . "image" (merge (dict) $repo.init.image .Values.model.image)) | nindent 4 }}
    command:
      {{- toYaml $repo.init.command | nindent 6 }}
    {{- include "rtvol.env" (dict "root" . "component" "model-init" "extra" .Values.model.extraEnv "env" (dict "RTVOL_MODEL_REPOSITORY" $repo.mountPath)) | nindent 4 }}
    {{- include "rtvol.containerSecurityContext" . | nindent 4 }}
    resources:
      {{- toYaml $repo.init.resources | nindent 6 }}
    volumeMounts:
      {{- include "rtvol.tmpMount" . | nindent 6 }}
      - name: model-repository
        mountPath: {{ $repo.mountPath }}
{{- end }}
{{- end -}}

{{/* The model server's resources: the values' plus the GPUs when enabled. */}}
{{- define "rtvol.modelResources" -}}
{{- $m := .Values.model -}}
{{- $res := deepCopy $m.resources }}
{{- if $m.gpu.enabled }}
{{- $_ := set $res "limits" (merge (dict $m.gpu.resourceName $m.gpu.count) ($res.limits | default dict)) }}
{{- end }}
resources:
  {{- toYaml $res | nindent 2 }}
{{- end -}}

{{/* The model server container, in the gateway pod or its own Deployment: rtvol's sidecar
     or NVIDIA's tritonserver (model.server). */}}
{{- define "rtvol.modelContainer" -}}
{{- if eq .Values.model.server "tritonserver" }}
{{- include "rtvol.tritonContainer" . }}
{{- else }}
{{- include "rtvol.sidecarContainer" . }}
{{- end }}
{{- end -}}

{{/* NVIDIA's Triton Inference Server on the model repository: its ONNX Runtime backend
     serves config.pbtxt as `rtvol export` wrote it; new versions are picked up by polling. */}}
{{- define "rtvol.tritonContainer" -}}
{{- $m := .Values.model -}}
{{- $t := $m.tritonserver -}}
- name: model
  image: {{ printf "%s:%s" $t.image.repository $t.image.tag | quote }}
  imagePullPolicy: {{ $t.image.pullPolicy | default "IfNotPresent" }}
  command: [tritonserver]
  args:
    - --model-repository={{ $m.repository.mountPath }}
    - --model-control-mode=poll
    - --repository-poll-secs={{ $t.pollSeconds }}
    - --disable-auto-complete-config
    {{- /* as a sidecar only the gateway container (same pod) may call it */}}
    - --grpc-address={{ ternary "127.0.0.1" "0.0.0.0" (eq $m.mode "sidecar") }}
    - --grpc-port={{ $m.ports.grpc }}
    - --http-port={{ $t.httpPort }}
    - --metrics-port={{ $m.ports.metrics }}
    - --exit-timeout-secs=20
  ports:
    - {name: grpc-model, containerPort: {{ $m.ports.grpc }}, protocol: TCP}
    - {name: http-model, containerPort: {{ $t.httpPort }}, protocol: TCP}
    - {name: metrics-model, containerPort: {{ $m.ports.metrics }}, protocol: TCP}
  startupProbe:
    httpGet: {path: /v2/health/ready, port: http-model}
    periodSeconds: 2
    failureThreshold: 150
  livenessProbe:
    httpGet: {path: /v2/health/live, port: http-model}
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: http-model}
    periodSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 2
  {{- include "rtvol.containerSecurityContext" . | nindent 2 }}
  {{- include "rtvol.modelResources" . | nindent 2 }}
  volumeMounts:
    {{- include "rtvol.tmpMount" . | nindent 4 }}
    - name: model-repository
      mountPath: {{ $m.repository.mountPath }}
      readOnly: true
{{- end -}}

{{/* rtvol's model sidecar (`rtvol serve model`). */}}
{{- define "rtvol.sidecarContainer" -}}
{{- $m := .Values.model -}}
- name: model
  {{- include "rtvol.image" (dict "root" . "image" $m.image) | nindent 2 }}
  args: [serve, model]
  {{- $env := dict "RTVOL_PORT" $m.ports.grpc "RTVOL_METRICS_PORT" $m.ports.metrics "RTVOL_MODEL_REPOSITORY" $m.repository.mountPath "RTVOL_BACKEND" $m.backend "RTVOL_SHADOW_SLICE_ROWS" $m.shadowSliceRows "RTVOL_SHADOW_MAX_PAUSE_MS" $m.shadowMaxPauseMs -}}
  {{- if eq $m.mode "sidecar" }}
  {{- $_ := set $env "RTVOL_UNIX_SOCKET" (printf "%s/model.sock" $m.socketDir) }}
  {{- if .Values.gateway.sharedMemory.enabled }}{{ $_ := set $env "RTVOL_SHM_DIR" $m.socketDir }}{{ end }}
  {{- end }}
  {{- if .Values.tls.enabled }}{{ $_ := set $env "RTVOL_HEALTH_PORT" $m.ports.health }}{{ end }}
  {{- include "rtvol.env" (dict "root" . "component" "model" "extra" $m.extraEnv "env" $env "tls" "mtls") | nindent 2 }}
  ports:
    - {name: grpc-model, containerPort: {{ $m.ports.grpc }}, protocol: TCP}
    - {name: metrics-model, containerPort: {{ $m.ports.metrics }}, protocol: TCP}
    {{- if .Values.tls.enabled }}
    - {name: health-model, containerPort: {{ $m.ports.health }}, protocol: TCP}
    {{- end }}
  {{- include "rtvol.grpcProbes" (dict "root" . "ports" $m.ports "startupFailures" 150) | nindent 2 }}
  {{- include "rtvol.containerSecurityContext" . | nindent 2 }}
  {{- include "rtvol.modelResources" . | nindent 2 }}
  volumeMounts:
    {{- include "rtvol.tmpMount" . | nindent 4 }}
    {{- include "rtvol.authMount" . | nindent 4 }}
    {{- include "rtvol.tlsMount" . | nindent 4 }}
    - name: model-repository
      mountPath: {{ $m.repository.mountPath }}
      readOnly: true
    {{- if eq $m.mode "sidecar" }}
    - name: model-socket
      mountPath: {{ $m.socketDir }}
    {{- end }}
{{- end -}}

{{/* Autoscaling/PDB/ServiceMonitor iterate over these: name -> values, for the Deployments that exist. */}}
{{- define "rtvol.deployments" -}}
{{- $d := dict "feature" .Values.feature "gateway" .Values.gateway -}}
{{- if eq .Values.model.mode "deployment" -}}
{{- $_ := set $d "model" .Values.model -}}
{{- end -}}
{{- toJson $d -}}
{{- end -}}

{{- /* The feature replicas' pod names through the headless Service, in ordinal order and
     comma-separated: what the gateway dials and what the feature certificate names (the two
     must match exactly: gRPC refuses the wildcard). */}}
{{- define "rtvol.featureReplicaHosts" -}}
{{- $svc := include "rtvol.componentName" (dict "root" . "component" "feature") -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.feature.replicas) }}{{ $hosts = append $hosts (printf "%s-%d.%s-replicas" $svc $i $svc) }}{{ end -}}
{{- join "," $hosts -}}
{{- end }}
