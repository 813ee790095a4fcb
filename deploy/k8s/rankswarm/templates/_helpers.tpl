{{/* Names and labels shared by the templates. */}}
{{- define "rankswarm.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "rankswarm.coordinator" -}}{{ include "rankswarm.fullname" . }}-coordinator{{- end -}}
{{- define "rankswarm.peers" -}}{{ include "rankswarm.fullname" . }}-peer{{- end -}}

{{- define "rankswarm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rankswarm.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}

{{/* The container security settings of both roles: the image's unprivileged user. */}}
{{- define "rankswarm.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}
