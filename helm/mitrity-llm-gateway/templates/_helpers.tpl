{{/*
Names and labels.
*/}}
{{- define "mitrity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mitrity.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mitrity.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mitrity.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mitrity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mitrity.labels" -}}
helm.sh/chart: {{ include "mitrity.chart" . }}
{{ include "mitrity.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mitrity.configMapName" -}}
{{- printf "%s-config" (include "mitrity.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mitrity.policyConfigMapName" -}}
{{- if .Values.policy.existingConfigMap -}}
{{- .Values.policy.existingConfigMap -}}
{{- else -}}
{{- printf "%s-policy" (include "mitrity.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The gateway config document: .Values.config with server.workers from .Values.workers.
*/}}
{{- define "mitrity.gatewayConfig" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $server := deepCopy (get $cfg "server" | default dict) -}}
{{- $_ := set $server "workers" (int (required "workers is required (worker processes per pod)" .Values.workers)) -}}
{{- $_ := set $cfg "server" $server -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
The policy bundle as YAML text.
*/}}
{{- define "mitrity.policyBundle" -}}
{{- if .Values.policy.bundleYaml -}}
{{- .Values.policy.bundleYaml -}}
{{- else -}}
{{- toYaml (required "policy.bundle or policy.bundleYaml is required" .Values.policy.bundle) -}}
{{- end -}}
{{- end -}}

{{/*
"host:port" / "[v6]:port" helpers. Call with the bind string.
*/}}
{{- define "mitrity.bindPort" -}}
{{- regexFind ":[0-9]+$" . | trimPrefix ":" -}}
{{- end -}}

{{- define "mitrity.bindHost" -}}
{{- $port := include "mitrity.bindPort" . -}}
{{- trimSuffix (printf ":%s" $port) . | trimPrefix "[" | trimSuffix "]" -}}
{{- end -}}

{{/* "true" when the host is a loopback address (same rule as gateway.config.is_loopback). */}}
{{- define "mitrity.isLoopback" -}}
{{- if or (eq . "localhost") (eq . "::1") (regexMatch "^127\\.[0-9]+\\.[0-9]+\\.[0-9]+$" .) -}}true{{- end -}}
{{- end -}}

{{- define "mitrity.serverBind" -}}
{{- $server := .Values.config.server | default dict -}}
{{- get $server "bind" | default "0.0.0.0:8443" -}}
{{- end -}}

{{- define "mitrity.adminBind" -}}
{{- $admin := .Values.config.admin | default dict -}}
{{- get $admin "bind" | default "127.0.0.1:9090" -}}
{{- end -}}

{{- define "mitrity.tlsEnabled" -}}
{{- $server := .Values.config.server | default dict -}}
{{- $tls := get $server "tls" | default dict -}}
{{- if or (not (hasKey $tls "enabled")) (get $tls "enabled") -}}true{{- end -}}
{{- end -}}

{{- define "mitrity.clientCAFile" -}}
{{- $server := .Values.config.server | default dict -}}
{{- $tls := get $server "tls" | default dict -}}
{{- get $tls "client_ca_file" | default "" -}}
{{- end -}}

{{- define "mitrity.gracefulTimeout" -}}
{{- $server := .Values.config.server | default dict -}}
{{- if hasKey $server "graceful_timeout_s" -}}
{{- ceil (get $server "graceful_timeout_s") | int -}}
{{- else -}}
30
{{- end -}}
{{- end -}}

{{- define "mitrity.terminationGracePeriodSeconds" -}}
{{- $floor := add (int .Values.preStopSleepSeconds) (int (include "mitrity.gracefulTimeout" .)) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $floor 15 -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) $floor -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + config.server.graceful_timeout_s (%d), or in-flight streams are killed before the gateway lets them finish" (int .Values.terminationGracePeriodSeconds) $floor) -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
Probe command: `python -c` urllib against the admin listener from inside the pod.
Call with (dict "ctx" $ "path" "/healthz"). Proxies from the environment are
ignored (the target is loopback); the admin token is sent when its variable is
set. A non-loopback admin.bind is served over TLS with the server certificate,
which does not name 127.0.0.1, so that loopback hop is not verified.
*/}}
{{- define "mitrity.probeCommand" -}}
{{- $ctx := .ctx -}}
{{- $bind := include "mitrity.adminBind" $ctx -}}
{{- $host := include "mitrity.bindHost" $bind -}}
{{- $port := include "mitrity.bindPort" $bind -}}
{{- $loopback := include "mitrity.isLoopback" $host -}}
{{- $target := $host -}}
{{- if or (eq $host "0.0.0.0") (eq $host "") -}}
{{- $target = "127.0.0.1" -}}
{{- else if eq $host "::" -}}
{{- $target = "::1" -}}
{{- end -}}
{{- if contains ":" $target -}}
{{- $target = printf "[%s]" $target -}}
{{- end -}}
{{- $url := printf "%s://%s:%s%s" (ternary "http" "https" (eq $loopback "true")) $target $port .path -}}
{{- $admin := $ctx.Values.config.admin | default dict -}}
{{- $tokenEnv := "MITRITY_ADMIN_TOKEN" -}}
{{- if hasKey $admin "token_env" -}}
{{- $tokenEnv = get $admin "token_env" | default "" -}}
{{- end -}}
{{- $token := "None" -}}
{{- if $tokenEnv -}}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $tokenEnv) -}}
{{- fail (printf "config.admin.token_env %q must be an environment variable name" $tokenEnv) -}}
{{- end -}}
{{- $token = printf "os.environ.get('%s')" $tokenEnv -}}
{{- end -}}
- python
- -c
- {{ printf "import os,ssl,urllib.request as u;t=%s;u.build_opener(u.ProxyHandler({}),u.HTTPSHandler(context=ssl._create_unverified_context())).open(u.Request('%s',headers={'Authorization':'Bearer '+t} if t else {}),timeout=3)" $token $url | quote }}
{{- end -}}

{{/*
Render-time checks: refuse what the gateway would refuse at start, and what
would silently break live policy updates.
*/}}
{{- define "mitrity.validate" -}}
{{- $bind := include "mitrity.serverBind" . -}}
{{- $host := include "mitrity.bindHost" $bind -}}
{{- $port := include "mitrity.bindPort" $bind -}}
{{- if not $port -}}
{{- fail (printf "config.server.bind %q must be host:port" $bind) -}}
{{- end -}}
{{- if and (not (include "mitrity.tlsEnabled" .)) (not (include "mitrity.isLoopback" $host)) -}}
{{- fail (printf "config.server.tls.enabled is false but config.server.bind %s is not a loopback address: no plaintext listener on the network" $bind) -}}
{{- end -}}
{{- $adminBind := include "mitrity.adminBind" . -}}
{{- if and (not (include "mitrity.isLoopback" (include "mitrity.bindHost" $adminBind))) (not (include "mitrity.tlsEnabled" .)) -}}
{{- fail (printf "config.admin.bind %s is not loopback, so it needs config.server.tls.enabled" $adminBind) -}}
{{- end -}}
{{- if eq (include "mitrity.bindPort" $adminBind) $port -}}
{{- fail "config.admin.bind must use another port than config.server.bind" -}}
{{- end -}}
{{- if and (include "mitrity.tlsEnabled" .) (not .Values.tls.existingSecret) -}}
{{- fail "tls.existingSecret is required: name a kubernetes.io/tls Secret holding tls.crt and tls.key (and ca.crt for config.server.tls.client_ca_file)" -}}
{{- end -}}
{{- $policyCfg := .Values.config.policy | default dict -}}
{{- $expected := printf "%s/%s" (trimSuffix "/" .Values.policy.mountPath) .Values.policy.key -}}
{{- if ne (get $policyCfg "file" | default "") $expected -}}
{{- fail (printf "config.policy.file must be %s (policy.mountPath/policy.key): only a file in the directory-mounted policy ConfigMap is updated in place" $expected) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" -}}
{{- end -}}
{{- $_ := include "mitrity.terminationGracePeriodSeconds" . -}}
{{- end -}}

{{/*
Ports toward providers, from config.providers upstream URLs (443 unless given).
*/}}
{{- define "mitrity.providerPorts" -}}
{{- $ports := list -}}
{{- $providers := .Values.config.providers | default (dict "anthropic" (dict "upstream" "https://api.anthropic.com") "openai" (dict "upstream" "https://api.openai.com")) -}}
{{- range $name, $entry := $providers -}}
{{- if $entry -}}
{{- $hostport := (urlParse $entry.upstream).host -}}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" | default "443" -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | sortAlpha | join "," -}}
{{- end -}}
