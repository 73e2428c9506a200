{{/* The name of every object of the release. */}}
{{- define "zerotrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "zerotrace.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zerotrace.labels" -}}
{{ include "zerotrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The agent's --config file: the values as the command line's long flags. Lists and switches
are written only when set, so the agent's own defaults stay the defaults.
*/}}
{{- define "zerotrace.config" -}}
{{- $s := .Values.selectors -}}
{{- $config := dict "exporter" "otlp" "otlp-endpoint" .Values.otlp.endpoint "prometheus-port" .Values.metrics.port -}}
{{- if .Values.otlp.protocol }}{{ $_ := set $config "otlp-protocol" .Values.otlp.protocol }}{{ end -}}
{{- if $s.container }}{{ $_ := set $config "container" true }}{{ end -}}
{{- if $s.exe }}{{ $_ := set $config "exe" $s.exe }}{{ end -}}
{{- if $s.excludeExe }}{{ $_ := set $config "exclude-exe" $s.excludeExe }}{{ end -}}
{{- if $s.ports }}{{ $_ := set $config "port" $s.ports }}{{ end -}}
{{- if $s.k8sNamespaces }}{{ $_ := set $config "k8s-namespace" $s.k8sNamespaces }}{{ end -}}
{{- if $s.k8sPods }}{{ $_ := set $config "k8s-pod" $s.k8sPods }}{{ end -}}
{{- $_ := set $config "exclude-k8s-namespace" (append ($s.excludeK8sNamespaces | default list) .Release.Namespace | uniq) -}}
{{- if .Values.routes }}{{ $_ := set $config "route" .Values.routes }}{{ end -}}
{{- $env := dict "OTEL_TRACES_SAMPLER" .Values.sampling.sampler "OTEL_METRIC_EXPORT_INTERVAL" (mul .Values.metrics.exportIntervalSeconds 1000 | toString) -}}
{{- if .Values.sampling.arg }}{{ $_ := set $env "OTEL_TRACES_SAMPLER_ARG" .Values.sampling.arg }}{{ end -}}
{{- $_ := set $config "env" $env -}}
{{- toYaml (mergeOverwrite $config (.Values.config | default dict)) -}}
{{- end -}}
