{{/* The name of every object of a release. */}}
{{- define "sieve.fullname" -}}
{{- printf "%s-sieve" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sieve.selectorLabels" -}}
app.kubernetes.io/name: sieve
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sieve.labels" -}}
{{ include "sieve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sieve.serviceAccountName" -}}
{{- if or .Values.serviceAccount.create .Values.presets.kubernetesAttributes.enabled -}}
{{ include "sieve.fullname" . }}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* The k8s_attributes processor the kubernetesAttributes preset adds. */}}
{{- define "sieve.k8sAttributesConfig" -}}
k8s_attributes:
  {{- if eq .Values.mode "daemonset" }}
  filter:
    node_from_env_var: K8S_NODE_NAME
  {{- end }}
  pod_association:
    - sources: [{from: resource_attribute, name: k8s.pod.ip}]
    - sources: [{from: resource_attribute, name: k8s.pod.uid}]
    - sources: [{from: connection}]
  extract:
    metadata:
      - k8s.namespace.name
      - k8s.pod.name
      - k8s.pod.uid
      - k8s.node.name
      - k8s.pod.start_time
      - k8s.deployment.name
      - k8s.replicaset.name
      - k8s.daemonset.name
      - k8s.job.name
      - k8s.cronjob.name
      - k8s.statefulset.name
      - k8s.container.name
      - container.image.name
      - container.image.tag
    {{- if .Values.presets.kubernetesAttributes.extractAllPodLabels }}
    labels:
      - {tag_name: "k8s.pod.labels.$1", key_regex: "(.*)", from: pod}
    {{- end }}
    {{- if .Values.presets.kubernetesAttributes.extractAllPodAnnotations }}
    annotations:
      - {tag_name: "k8s.pod.annotations.$1", key_regex: "(.*)", from: pod}
    {{- end }}
{{- end -}}

{{/* The configuration: .Values.config with the presets applied. */}}
{{- define "sieve.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.presets.kubernetesAttributes.enabled -}}
{{- $preset := include "sieve.k8sAttributesConfig" . | fromYaml -}}
{{- $_ := set $config "processors" (mustMergeOverwrite $preset (default (dict) $config.processors)) -}}
{{- range $name, $pipeline := $config.service.pipelines -}}
{{- $processors := default (list) $pipeline.processors -}}
{{- $present := false -}}
{{- range $processors -}}
{{- if regexMatch "^k8s_?attributes(/.*)?$" . -}}
{{- $present = true -}}
{{- end -}}
{{- end -}}
{{- if not $present -}}
{{- $_ := set $pipeline "processors" (prepend $processors "k8s_attributes") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Where persistent queues live: the directory of the config's file_storage
extension (its default when it names none), else persistence.mountPath when
persistence is enabled; empty: no storage. */}}
{{- define "sieve.storageDirectory" -}}
{{- $directory := "" -}}
{{- range $id, $extension := (default (dict) .Values.config.extensions) -}}
{{- if and (not $directory) (or (eq $id "file_storage") (hasPrefix "file_storage/" $id)) -}}
{{- $directory = "/var/lib/sieve/file_storage" -}}
{{- if and $extension $extension.directory -}}
{{- $directory = $extension.directory -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not $directory) .Values.persistence.enabled -}}
{{- $directory = .Values.persistence.mountPath -}}
{{- end -}}
{{- $directory -}}
{{- end -}}

{{/* The port of sieve's self-metrics and health endpoints (the config's
service.telemetry.metrics.address), which the probes use; 8888 when it names none. */}}
{{- define "sieve.metricsPort" -}}
{{- $address := "" -}}
{{- with .Values.config.service -}}{{- with .telemetry -}}{{- with .metrics -}}
{{- $address = default "" .address -}}
{{- end -}}{{- end -}}{{- end -}}
{{- $port := regexFind "[0-9]+$" (toString $address) -}}
{{- default "8888" $port -}}
{{- end -}}

{{/* The pod template every mode runs. */}}
{{- define "sieve.podTemplate" -}}
metadata:
  labels:
    {{- include "sieve.selectorLabels" . | nindent 4 }}
  annotations:
    {{- if .Values.rollOnConfigChange }}
    checksum/config: {{ include "sieve.config" . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "sieve.serviceAccountName" . }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- if and (eq .Values.mode "daemonset") .Values.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  {{- if and (include "sieve.storageDirectory" .) (eq .Values.mode "daemonset") }}
  initContainers:
    # a hostPath is created root-owned and fsGroup does not apply to it: hand the queue
    # directory to sieve's user, with only the capability that takes
    - name: storage-owner
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["chown", "10001:10001", "/data"]
      securityContext:
        runAsUser: 0
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL], add: [CHOWN]}
      volumeMounts:
        - name: data
          mountPath: /data
  {{- end }}
  containers:
    - name: sieve
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["--config", "/etc/sieve/config.yaml"]
      env:
        - name: POD_IP
          valueFrom:
            fieldRef: {fieldPath: status.podIP}
        - name: K8S_NODE_NAME
          valueFrom:
            fieldRef: {fieldPath: spec.nodeName}
        {{- range $name, $ref := .Values.secretEnv }}
        - name: {{ $name }}
          valueFrom:
            secretKeyRef:
              name: {{ $ref.secretName }}
              key: {{ $ref.key }}
        {{- end }}
      ports:
        - name: otlp-grpc
          containerPort: 4317
          {{- if and (eq .Values.mode "daemonset") .Values.hostPorts.enabled (not .Values.hostNetwork) }}
          hostPort: {{ .Values.hostPorts.otlpGrpc }}
          {{- end }}
        - name: otlp-http
          containerPort: 4318
          {{- if and (eq .Values.mode "daemonset") .Values.hostPorts.enabled (not .Values.hostNetwork) }}
          hostPort: {{ .Values.hostPorts.otlpHttp }}
          {{- end }}
        - name: metrics
          containerPort: {{ include "sieve.metricsPort" . }}
      livenessProbe:
        httpGet: {path: /healthz, port: metrics}
      readinessProbe:
        httpGet: {path: /readyz, port: metrics}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - name: config
          mountPath: /etc/sieve
          readOnly: true
        {{- with include "sieve.storageDirectory" . }}
        - name: data
          mountPath: {{ . }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "sieve.fullname" . }}
    {{- $storage := include "sieve.storageDirectory" . }}
    {{- if and $storage (eq .Values.mode "daemonset") }}
    - name: data
      hostPath:
        path: {{ printf "%s/%s" .Values.persistence.hostPath .Release.Name }}
        type: DirectoryOrCreate
    {{- else if and $storage (eq .Values.mode "deployment") }}
    - name: data
      emptyDir: {}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
