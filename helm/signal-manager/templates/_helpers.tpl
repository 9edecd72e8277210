{{/*
Chart name, at most 63 characters.
*/}}
{{- define "signal-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources, at most 63 characters (a DNS label).
The release name alone when it already contains the chart name.
*/}}
{{- define "signal-manager.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "signal-manager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource of the release.
*/}}
{{- define "signal-manager.commonLabels" -}}
helm.sh/chart: {{ include "signal-manager.chart" . }}
app.kubernetes.io/name: {{ include "signal-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signal-manager
{{- end }}

{{/*
Labels of the signaling nodes and of the resources about them.
*/}}
{{- define "signal-manager.labels" -}}
{{ include "signal-manager.commonLabels" . }}
app.kubernetes.io/component: signaling
{{- end }}

{{/*
Selector labels of the signaling pods. The component label keeps the
optional Redis pod out of the selector.
*/}}
{{- define "signal-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signal-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: signaling
{{- end }}

{{/*
Name of the optional single-instance Redis.
*/}}
{{- define "signal-manager.redisName" -}}
{{- printf "%s-redis" (include "signal-manager.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Labels of the optional single-instance Redis.
*/}}
{{- define "signal-manager.redisLabels" -}}
{{ include "signal-manager.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
Selector labels of the optional single-instance Redis.
*/}}
{{- define "signal-manager.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "signal-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "signal-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signal-manager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference of the signaling container.
*/}}
{{- define "signal-manager.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the Secret the chart creates.
*/}}
{{- define "signal-manager.secretName" -}}
{{- include "signal-manager.fullname" . }}
{{- end }}

{{/*
Where the token secret comes from: a dict with "name" and "key" of a Secret,
or empty "key" when the deployment uses no HS256 secret.
*/}}
{{- define "signal-manager.tokenSecretRef" -}}
{{- if .Values.existingSecret }}
{{- dict "name" .Values.existingSecret "key" .Values.existingSecretKeys.tokenSecret | toJson }}
{{- else if or .Values.auth.tokenSecret (not .Values.auth.publicKey) }}
{{- dict "name" (include "signal-manager.secretName" .) "key" "token-secret" | toJson }}
{{- else }}
{{- dict "name" "" "key" "" | toJson }}
{{- end }}
{{- end }}

{{/*
Where the PEM public key comes from, same shape as tokenSecretRef.
*/}}
{{- define "signal-manager.publicKeyRef" -}}
{{- if .Values.existingSecret }}
{{- dict "name" .Values.existingSecret "key" .Values.existingSecretKeys.publicKey | toJson }}
{{- else if .Values.auth.publicKey }}
{{- dict "name" (include "signal-manager.secretName" .) "key" "public-key" | toJson }}
{{- else }}
{{- dict "name" "" "key" "" | toJson }}
{{- end }}
{{- end }}

{{/*
Where the Redis URL comes from, same shape as tokenSecretRef; empty "key":
no Redis (every pod is a single node with the in-memory backend).
*/}}
{{- define "signal-manager.redisUrlRef" -}}
{{- if .Values.redis.existingSecret }}
{{- dict "name" .Values.redis.existingSecret "key" .Values.redis.existingSecretKey | toJson }}
{{- else if or .Values.redis.url .Values.redis.internal.enabled }}
{{- dict "name" (include "signal-manager.secretName" .) "key" "redis-url" | toJson }}
{{- else }}
{{- dict "name" "" "key" "" | toJson }}
{{- end }}
{{- end }}

{{/*
True ("true") when the chart renders its own Secret.
*/}}
{{- define "signal-manager.createSecret" -}}
{{- $token := include "signal-manager.tokenSecretRef" . | fromJson }}
{{- $key := include "signal-manager.publicKeyRef" . | fromJson }}
{{- $redis := include "signal-manager.redisUrlRef" . | fromJson }}
{{- $own := include "signal-manager.secretName" . }}
{{- if and (not .Values.existingSecret) (or (eq $token.name $own) (eq $key.name $own)) }}true
{{- else if eq $redis.name $own }}true
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes grants a terminating pod: computed, or the configured
value when it leaves room for the preStop sleep and the drain.
*/}}
{{- define "signal-manager.terminationGracePeriodSeconds" -}}
{{- $needed := add (int64 .Values.server.drainTimeout) (int64 .Values.lifecycle.preStopSleepSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 15 }}
{{- else if le (int64 .Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than server.drainTimeout + lifecycle.preStopSleepSeconds (%d)" (int64 .Values.terminationGracePeriodSeconds) $needed) }}
{{- else }}
{{- int64 .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
A number as a TOML float: 1 -> 1.0, 0.05 -> 0.05.
*/}}
{{- define "signal-manager.tomlFloat" -}}
{{- $f := float64 . }}
{{- if eq $f (floor $f) }}{{ printf "%.1f" $f }}{{ else }}{{ $f }}{{ end }}
{{- end }}

{{/*
Checks on combinations of values that the schema cannot express.
*/}}
{{- define "signal-manager.validate" -}}
{{- if and .Values.existingSecret (or .Values.auth.tokenSecret .Values.auth.publicKey) }}
{{- fail "existingSecret is set: leave auth.tokenSecret and auth.publicKey empty and put them in that Secret" }}
{{- end }}
{{- if and .Values.existingSecret (not (or .Values.existingSecretKeys.tokenSecret .Values.existingSecretKeys.publicKey)) }}
{{- fail "existingSecret is set: name its key with existingSecretKeys.tokenSecret or existingSecretKeys.publicKey" }}
{{- end }}
{{- $redisSources := 0 }}
{{- if .Values.redis.url }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if .Values.redis.existingSecret }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if .Values.redis.internal.enabled }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if gt $redisSources 1 }}
{{- fail "give only one of redis.url, redis.existingSecret and redis.internal.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
