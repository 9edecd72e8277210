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
References to secret values, each a JSON dict: "name" and "key" of the
Secret holding it, "own" true when that Secret is the chart's own; an empty
"key" when the deployment does not use that value.
*/}}
{{- define "signal-manager.secretRef" -}}
{{- $ctx := index . 0 }}
{{- $existing := index . 1 }}
{{- $existingKey := index . 2 }}
{{- $own := index . 3 }}
{{- $ownKey := index . 4 }}
{{- if $existing }}
{{- dict "name" $existing "key" $existingKey "own" false | toJson }}
{{- else if $own }}
{{- dict "name" (include "signal-manager.secretName" $ctx) "key" $ownKey "own" true | toJson }}
{{- else }}
{{- dict "name" "" "key" "" "own" false | toJson }}
{{- end }}
{{- end }}

{{/*
Where the token secret comes from. Without any way to verify tokens
(token secret, public key, JWK Set), the chart generates a secret.
*/}}
{{- define "signal-manager.tokenSecretRef" -}}
{{- $generated := not (or .Values.auth.tokenSecret .Values.auth.publicKey .Values.auth.jwksUrl) }}
{{- include "signal-manager.secretRef" (list . .Values.existingSecret .Values.existingSecretKeys.tokenSecret (or .Values.auth.tokenSecret $generated) "token-secret") }}
{{- end }}

{{/*
Where the PEM public key comes from.
*/}}
{{- define "signal-manager.publicKeyRef" -}}
{{- include "signal-manager.secretRef" (list . .Values.existingSecret .Values.existingSecretKeys.publicKey .Values.auth.publicKey "public-key") }}
{{- end }}

{{/*
Where the Redis URL comes from; empty "key": no Redis (every pod is a single
node with the in-memory backend).
*/}}
{{- define "signal-manager.redisUrlRef" -}}
{{- include "signal-manager.secretRef" (list . .Values.redis.existingSecret .Values.redis.existingSecretKey (or .Values.redis.url .Values.redis.internal.enabled) "redis-url") }}
{{- end }}

{{/*
Where the Sentinels' own password comes from.
*/}}
{{- define "signal-manager.redisSentinelPasswordRef" -}}
{{- include "signal-manager.secretRef" (list . .Values.redis.sentinel.existingSecret .Values.redis.sentinel.existingSecretKey .Values.redis.sentinel.password "redis-sentinel-password") }}
{{- end }}

{{/*
Where the TURN server's shared secret comes from.
*/}}
{{- define "signal-manager.turnSecretRef" -}}
{{- include "signal-manager.secretRef" (list . .Values.turn.existingSecret .Values.turn.existingSecretKey .Values.turn.secret "turn-secret") }}
{{- end }}

{{/*
Where the admin API token comes from.
*/}}
{{- define "signal-manager.adminApiTokenRef" -}}
{{- include "signal-manager.secretRef" (list . .Values.admin.existingSecret .Values.admin.existingSecretKey .Values.admin.apiToken "admin-api-token") }}
{{- end }}

{{/*
True ("true") when the chart renders its own Secret: some secret value is
given in the values rather than in an existing Secret.
*/}}
{{- define "signal-manager.createSecret" -}}
{{- $create := false }}
{{- range $ref := list "tokenSecretRef" "publicKeyRef" "redisUrlRef" "redisSentinelPasswordRef" "turnSecretRef" "adminApiTokenRef" }}
{{- if (include (printf "signal-manager.%s" $ref) $ | fromJson).own }}
{{- $create = true }}
{{- end }}
{{- end }}
{{- if $create }}true{{ end }}
{{- end }}

{{/*
Where the Redis TLS files are mounted (from redis.tls.existingSecret).
*/}}
{{- define "signal-manager.redisTlsDir" -}}
/etc/signal-manager/redis-tls
{{- end }}

{{/*
The values that give a way to verify tokens, as a JSON list of their names.
CONFIG.md allows at most one of auth.token_secret, auth.public_key_path and
auth.jwks_url: a node given two refuses to start.
*/}}
{{- define "signal-manager.authSources" -}}
{{- $s := list }}
{{- if .Values.auth.tokenSecret }}{{ $s = append $s "auth.tokenSecret" }}{{ end }}
{{- if and .Values.existingSecret .Values.existingSecretKeys.tokenSecret }}{{ $s = append $s "existingSecretKeys.tokenSecret" }}{{ end }}
{{- if .Values.auth.publicKey }}{{ $s = append $s "auth.publicKey" }}{{ end }}
{{- if and .Values.existingSecret .Values.existingSecretKeys.publicKey }}{{ $s = append $s "existingSecretKeys.publicKey" }}{{ end }}
{{- if .Values.auth.jwksUrl }}{{ $s = append $s "auth.jwksUrl" }}{{ end }}
{{- toJson $s }}
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
{{- $auth := include "signal-manager.authSources" . | fromJsonArray }}
{{- if gt (len $auth) 1 }}
{{- fail (printf "give only one way to verify tokens (a node refuses to start with two of auth.token_secret, auth.public_key_path and auth.jwks_url); the values set %s" (join " and " $auth)) }}
{{- end }}
{{- if and .Values.turn.existingSecret .Values.turn.secret }}
{{- fail "turn.existingSecret is set: leave turn.secret empty and put the secret in that Secret" }}
{{- end }}
{{- if and .Values.turn.urls (not (or .Values.turn.secret .Values.turn.existingSecret)) }}
{{- fail "turn.urls needs the TURN server's shared secret: set turn.secret or turn.existingSecret" }}
{{- end }}
{{- if and (or .Values.turn.secret .Values.turn.existingSecret) (not .Values.turn.urls) }}
{{- fail "a TURN secret is set but turn.urls is empty: list the TURN URLs it is for" }}
{{- end }}
{{- if and .Values.admin.existingSecret .Values.admin.apiToken }}
{{- fail "admin.existingSecret is set: leave admin.apiToken empty and put the token in that Secret" }}
{{- end }}
{{- $redisSources := 0 }}
{{- if .Values.redis.url }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if .Values.redis.existingSecret }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if .Values.redis.internal.enabled }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if gt $redisSources 1 }}
{{- fail "give only one of redis.url, redis.existingSecret and redis.internal.enabled" }}
{{- end }}
{{- $mode := .Values.redis.mode }}
{{- $sentinel := .Values.redis.sentinel }}
{{- $tls := .Values.redis.tls }}
{{- if and .Values.redis.internal.enabled (ne $mode "standalone") }}
{{- fail (printf "redis.internal.enabled runs one standalone Redis pod: it cannot serve redis.mode %s; give the addresses of the %s in redis.url or redis.existingSecret" $mode (ternary "Sentinels" "cluster's seed nodes" (eq $mode "sentinel"))) }}
{{- end }}
{{- if and (ne $mode "standalone") (eq $redisSources 0) }}
{{- fail (printf "redis.mode %s needs the addresses of the %s: set redis.url or redis.existingSecret" $mode (ternary "Sentinels" "cluster's seed nodes" (eq $mode "sentinel"))) }}
{{- end }}
{{- if and (eq $mode "standalone") (contains "," .Values.redis.url) }}
{{- fail "redis.url lists several URLs: that needs redis.mode sentinel (the Sentinels) or cluster (seed nodes)" }}
{{- end }}
{{- if and (eq $mode "sentinel") (not $sentinel.masterName) }}
{{- fail "redis.mode sentinel needs redis.sentinel.masterName, the master name the Sentinels monitor (e.g. mymaster)" }}
{{- end }}
{{- if and (ne $mode "sentinel") (or $sentinel.masterName $sentinel.password $sentinel.existingSecret) }}
{{- fail (printf "redis.sentinel.* is for redis.mode sentinel, not %s" $mode) }}
{{- end }}
{{- if and $sentinel.existingSecret $sentinel.password }}
{{- fail "redis.sentinel.existingSecret is set: leave redis.sentinel.password empty and put the password in that Secret" }}
{{- end }}
{{- if and (not $tls.enabled) (or $tls.existingSecret $tls.clientCert $tls.insecure) }}
{{- fail "redis.tls.existingSecret, redis.tls.clientCert and redis.tls.insecure need redis.tls.enabled" }}
{{- end }}
{{- if $tls.enabled }}
{{- if .Values.redis.internal.enabled }}
{{- fail "redis.tls.enabled: the internal Redis pod speaks no TLS; use an external Redis" }}
{{- end }}
{{- range $url := splitList "," .Values.redis.url }}
{{- if and $url (not (hasPrefix "rediss://" $url)) }}
{{- fail (printf "redis.tls.enabled: every URL in redis.url must start with rediss://, not %s://..." (regexReplaceAll "://.*" $url "")) }}
{{- end }}
{{- end }}
{{- if and $tls.existingSecret (not (or $tls.caCert $tls.clientCert)) }}
{{- fail "redis.tls.existingSecret is set but neither redis.tls.caCert nor redis.tls.clientCert says what it holds" }}
{{- end }}
{{- if and $tls.clientCert (not $tls.existingSecret) }}
{{- fail "redis.tls.clientCert needs redis.tls.existingSecret holding tls.crt and tls.key" }}
{{- end }}
{{- if and $tls.insecure $tls.existingSecret $tls.caCert }}
{{- fail "redis.tls.insecure accepts any certificate, so the CA from redis.tls.existingSecret would not be used: set redis.tls.caCert=false or drop insecure" }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
