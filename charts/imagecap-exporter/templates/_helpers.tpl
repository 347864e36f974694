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

{{/*
The exporter's config file (config.yaml in the ConfigMap). prepull.tolerations and
prepull.sources are written only when they have something in them, so that the
defaults give the same file (and config checksum) as before they existed. A source is
one map with one key; its optional keys are written only when set.
*/}}
{{- define "imagecap-exporter.config" -}}
{{- $p := .Values.prepull -}}
{{- $prepull := dict "images" ($p.images | default list) "patterns" ($p.patterns | default list) "nodeSelector" ($p.nodeSelector | default dict) -}}
{{- with $p.tolerations }}
{{- $_ := set $prepull "tolerations" . }}
{{- end }}
{{- $sources := list -}}
{{- $s := $p.sources | default dict -}}
{{- $nublado := $s.nublado | default dict -}}
{{- if $nublado.enabled }}
{{- $n := dict "url" $nublado.url }}
{{- if (include "imagecap-exporter.nubladoTokenSecret" .) }}
{{- $_ := set $n "tokenFile" (include "imagecap-exporter.nubladoTokenFile" .) }}
{{- end }}
{{- with $nublado.interval }}{{ $_ := set $n "interval" . }}{{ end }}
{{- with $nublado.timeout }}{{ $_ := set $n "timeout" . }}{{ end }}
{{- $sources = append $sources (dict "nublado" $n) }}
{{- end }}
{{- $fledged := $s.kubeFledged | default dict -}}
{{- if $fledged.enabled }}
{{- $k := dict }}
{{- with $fledged.namespace }}{{ $_ := set $k "namespace" . }}{{ end }}
{{- $sources = append $sources (dict "kubeFledged" $k) }}
{{- end }}
{{- $ds := $s.daemonSets | default dict -}}
{{- if $ds.enabled }}
{{- $d := dict }}
{{- with $ds.namespace }}{{ $_ := set $d "namespace" . }}{{ end }}
{{- with $ds.selector }}{{ $_ := set $d "selector" . }}{{ end }}
{{- $sources = append $sources (dict "daemonSets" $d) }}
{{- end }}
{{- with $sources }}
{{- $_ := set $prepull "sources" . }}
{{- end }}
{{- $cfg := dict "defaultMaxImages" .Values.defaultMaxImages "prepull" $prepull -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Where the Nublado bearer token is mounted, and the directory holding it. */}}
{{- define "imagecap-exporter.nubladoTokenDir" -}}
/var/run/secrets/nublado
{{- end -}}
{{- define "imagecap-exporter.nubladoTokenFile" -}}
{{ include "imagecap-exporter.nubladoTokenDir" . }}/token
{{- end -}}

{{/* The name of the Nublado token Secret when the Nublado source uses one, else empty. */}}
{{- define "imagecap-exporter.nubladoTokenSecret" -}}
{{- $n := (.Values.prepull.sources | default dict).nublado | default dict -}}
{{- if $n.enabled -}}
{{- ($n.tokenSecret | default dict).name | default "" -}}
{{- end -}}
{{- end -}}

{{/*
Namespaced sources that need RBAC: a list of {name, namespace, apiGroup, resource}
as JSON, one per enabled kube-fledged or DaemonSet source. An empty namespace means
every namespace (a ClusterRole rule), otherwise a Role in that namespace.
*/}}
{{- define "imagecap-exporter.sourceGrants" -}}
{{- $s := .Values.prepull.sources | default dict -}}
{{- $grants := list -}}
{{- $fledged := $s.kubeFledged | default dict -}}
{{- if $fledged.enabled -}}
{{- $grants = append $grants (dict "name" "kube-fledged" "namespace" ($fledged.namespace | default "") "apiGroup" "kubefledged.io" "resource" "imagecaches" "comment" "kube-fledged ImageCaches: the images each cache wants, and on which nodes.") -}}
{{- end -}}
{{- $ds := $s.daemonSets | default dict -}}
{{- if $ds.enabled -}}
{{- $grants = append $grants (dict "name" "daemonsets" "namespace" ($ds.namespace | default "") "apiGroup" "apps" "resource" "daemonsets" "comment" "Prepuller DaemonSets: their pods' images, and the nodes they run on.") -}}
{{- end -}}
{{- if .Values.agent.enabled -}}
{{- $grants = append $grants (dict "name" "agents" "namespace" .Release.Namespace "apiGroup" "discovery.k8s.io" "resource" "endpointslices" "verbs" (list "list" "watch") "comment" "The node agents' EndpointSlices: where each node's agent answers.") -}}
{{- end -}}
{{- toJson $grants -}}
{{- end -}}

{{/* Container arguments. */}}
{{- define "imagecap-exporter.args" -}}
- --log-format
- {{ .Values.logFormat | quote }}
- serve
- --web.listen-address
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
{{- if .Values.kubeletStats.enabled }}
- --kubelet-stats
- --kubelet-stats-interval
- {{ .Values.kubeletStats.interval | quote }}
{{- end }}
{{- if .Values.agent.enabled }}
- --agents
- {{ printf "%s/%s" .Release.Namespace (include "imagecap-exporter.agentName" .) | quote }}
- --agents-interval
- {{ .Values.agent.interval | quote }}
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

{{/* Name of the node agent's objects: "<fullname>-agent", at most 63 characters. */}}
{{- define "imagecap-exporter.agentName" -}}
{{- printf "%s-agent" (include "imagecap-exporter.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{/*
Labels that select the node agent's pods. Their app.kubernetes.io/name differs from
the exporter's, so the exporter's Service, ServiceMonitor and NetworkPolicy never
pick agent pods.
*/}}
{{- define "imagecap-exporter.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-agent" (include "imagecap-exporter.name" . | trunc 57 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Standard labels on the node agent's objects. */}}
{{- define "imagecap-exporter.agentLabels" -}}
helm.sh/chart: {{ include "imagecap-exporter.chart" . }}
{{ include "imagecap-exporter.agentSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: imagecap-exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* "true" when the node agents prune (agent.enabled and agent.prune.enabled), else empty. */}}
{{- define "imagecap-exporter.agentPrunes" -}}
{{- if and .Values.agent.enabled ((.Values.agent.prune | default dict).enabled) -}}
true
{{- end -}}
{{- end -}}

{{/*
The node agent's config file (config.yaml in the ConfigMap <fullname>-agent): the
`prune` block of the values with the agent's own keys; target only when set.
*/}}
{{- define "imagecap-exporter.agentConfig" -}}
{{- $p := .Values.agent.prune -}}
{{- $prune := dict "enabled" true "dryRun" $p.dryRun "interval" $p.interval "grace" $p.grace "maxRemovalsPerRun" ($p.maxRemovalsPerRun | int64) "keep" ($p.keep | default list) -}}
{{- if not (kindIs "invalid" $p.target) }}
{{- $_ := set $prune "target" ($p.target | int64) }}
{{- end }}
{{- toYaml (dict "prune" $prune) -}}
{{- end -}}

{{/* The exporter's Service as the agents reach it: http[s]://<fullname>.<namespace>.svc:9754. */}}
{{- define "imagecap-exporter.exporterURL" -}}
{{- printf "%s://%s.%s.svc:9754" (ternary "https" "http" .Values.webConfig.tls) (include "imagecap-exporter.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Where an agent finds the exporter's basic-auth password, and the directory holding it. */}}
{{- define "imagecap-exporter.exporterPasswordDir" -}}
/var/run/secrets/imagecap-exporter
{{- end -}}

{{/*
The CA bundle an agent verifies the exporter with, when webConfig.tls and
agent.prune.exporterCA.key: a file of the webConfig Secret (already mounted), or
of a Secret of its own mounted at /etc/imagecap-exporter/exporter-ca. Else empty.
*/}}
{{- define "imagecap-exporter.exporterCAFile" -}}
{{- $ca := .Values.agent.prune.exporterCA | default dict -}}
{{- if and .Values.webConfig.tls $ca.key -}}
{{- if $ca.secretName -}}
/etc/imagecap-exporter/exporter-ca/ca.crt
{{- else if .Values.webConfig.secretName -}}
{{ printf "/etc/imagecap-exporter/web/%s" $ca.key }}
{{- end -}}
{{- end -}}
{{- end -}}
