{{/* Chart name, overridable with nameOverride. */}}
{{- define "imagecap-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified name of the objects: fullnameOverride, else the release name when it
already contains the chart name, else "<release>-<chart>"; at most 63 characters.
*/}}
{{- define "imagecap-exporter.fullname" -}}
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

{{- define "imagecap-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the exporter's pods; they never change between upgrades. */}}
{{- define "imagecap-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagecap-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Standard labels on every object. */}}
{{- define "imagecap-exporter.labels" -}}
helm.sh/chart: {{ include "imagecap-exporter.chart" . }}
{{ include "imagecap-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: imagecap-exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "imagecap-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "imagecap-exporter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "imagecap-exporter.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The exporter's config file (config.yaml in the ConfigMap). */}}
{{- define "imagecap-exporter.config" -}}
{{- $prepull := dict "images" (.Values.prepull.images | default list) "patterns" (.Values.prepull.patterns | default list) "nodeSelector" (.Values.prepull.nodeSelector | default dict) -}}
{{- $cfg := dict "defaultMaxImages" .Values.defaultMaxImages "prepull" $prepull -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Container arguments. */}}
{{- define "imagecap-exporter.args" -}}
- --log-format
- {{ .Values.logFormat | quote }}
- serve
- --listen
- "0.0.0.0:9754"
- --config
- /etc/imagecap-exporter/config.yaml
- --mode
- {{ .Values.mode | quote }}
- --poll-interval
- {{ .Values.pollInterval | quote }}
- --default-max-images
- {{ .Values.defaultMaxImages | int64 | quote }}
{{- with .Values.nodeLabelSelector }}
- --node-selector
- {{ . | quote }}
{{- end }}
{{- if .Values.kubeletConfigz.enabled }}
- --kubelet-configz
- --kubelet-configz-interval
- {{ .Values.kubeletConfigz.interval | quote }}
{{- end }}
{{- if .Values.webConfig.secretName }}
- --web.config.file
- /etc/imagecap-exporter/web/web.yml
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Namespace of an optional object: its own value, else the release namespace. */}}
{{- define "imagecap-exporter.namespace" -}}
{{- default .root.Release.Namespace .ns -}}
{{- end -}}
