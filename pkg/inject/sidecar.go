package inject

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/bootstrap"
)

// Defaults of Config.
const (
	DefaultProxyImage      = "envoyproxy/envoy:v1.40.0" // the Envoy Skiff is tested with
	DefaultCaptureImage    = "skiff/capture:dev"
	DefaultPilotAddress    = "skiff-pilot.istio-system.svc:15012"
	DefaultPilotServerName = "skiff-pilot.istio-system.svc"
)

// Config is what an injected pod gets. The zero value of every field means its default.
type Config struct {
	Selector
	// ProxyImage runs Envoy as /usr/local/bin/envoy or on the PATH as envoy.
	ProxyImage string
	// CaptureImage has skiff-capture on the PATH.
	CaptureImage string
	// PilotAddress is HOST:PORT of pilot's TLS xDS port, as the pod resolves it.
	PilotAddress string
	// PilotServerName is the name in pilot's serving certificate, checked by Envoy.
	PilotServerName string
	// ProxyConcurrency is Envoy's number of worker threads; default 2, as Istio's. (Envoy's own
	// default is one per CPU of the node, which is many idle threads on a large node.)
	ProxyConcurrency int
}

// WithDefaults returns c with every empty field set to its default: the configuration Inject
// uses.
func (c Config) WithDefaults() Config {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&c.Revision, DefaultSkiffRevision)
	def(&c.ProxyImage, DefaultProxyImage)
	def(&c.CaptureImage, DefaultCaptureImage)
	def(&c.PilotAddress, DefaultPilotAddress)
	def(&c.PilotServerName, DefaultPilotServerName)
	if c.ProxyConcurrency <= 0 {
		c.ProxyConcurrency = 2
	}
	return c
}

// NodeIDArg is the proxy's Istio node ID, as the proxy container's --service-node argument:
// the kubelet expands $(VAR) from the container's environment (Downward API), which is the
// only way to the pod's IP, as it is assigned after admission.
const NodeIDArg = "sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.cluster.local"

// Status is the JSON of the StatusAnnotation: what injection added, in Istio's shape.
type Status struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

// Inject returns a copy of pod with the sidecar added; pod itself is not changed. namespace is
// the pod's namespace, which the AdmissionReview carries beside the pod (a pod being created
// often has none of its own). It fails only if the pod's labels make an invalid bootstrap.
func (c Config) Inject(pod *corev1.Pod, namespace string) (*corev1.Pod, error) {
	c = c.WithDefaults()
	out := pod.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}

	// Istio's labels, unless the workload set them: other proxies use the tlsMode label for
	// auto-mTLS; telemetry and pilot use the canonical service.
	name, revision := CanonicalService(pod)
	setDefault(out.Labels, TLSModeLabel, "istio")
	setDefault(out.Labels, CanonicalNameLabel, name)
	setDefault(out.Labels, CanonicalRevisionLabel, revision)

	boot, err := c.bootstrap(out.Labels[CanonicalNameLabel]+"."+namespace, out.Labels)
	if err != nil {
		return nil, err
	}

	if len(out.Spec.Containers) > 0 {
		setDefault(out.Annotations, DefaultContainerAnnotation, out.Spec.Containers[0].Name)
	}
	// Envoy's metrics, unless the application has its own scrape annotations: with no agent to
	// merge the two, overwriting them would silently stop the application's metrics.
	if _, ok := out.Annotations["prometheus.io/scrape"]; !ok {
		out.Annotations["prometheus.io/scrape"] = "true"
		out.Annotations["prometheus.io/port"] = strconv.Itoa(PrometheusPort)
		out.Annotations["prometheus.io/path"] = bootstrap.PrometheusPath
	}

	// The kubelet's probes of the application would meet the sidecar's mTLS: they go to the
	// sidecar's status port instead, which answers for the application (probes.go).
	probers, err := rewriteAppProbes(out).Encode()
	if err != nil {
		return nil, err
	}

	// istio-init goes last among the init containers: the application's own init containers
	// then run before the capture exists, with a working network (with no Envoy running yet,
	// captured traffic would go nowhere), and the capture is in place before any container.
	out.Spec.InitContainers = append(out.Spec.InitContainers, c.initContainer())
	out.Spec.Containers = append(out.Spec.Containers, c.proxyContainer(boot, probers))
	out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{
		Name: CARootVolumeName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: CARootConfigMap},
		}},
	})

	status, err := json.Marshal(Status{
		InitContainers: []string{InitContainerName},
		Containers:     []string{ProxyContainerName},
		Volumes:        []string{CARootVolumeName},
		Revision:       c.revision(),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the %s annotation: %w", StatusAnnotation, err)
	}
	out.Annotations[StatusAnnotation] = string(status)
	return out, nil
}

// bootstrap is the proxy's Envoy bootstrap as compact JSON, for --config-yaml. It is built per
// pod only for node.cluster and the LABELS metadata (which select Sidecars and policies); the
// node ID comes from --service-node, so the pod's IP is not needed here.
func (c Config) bootstrap(cluster string, labels map[string]string) (string, error) {
	js, err := bootstrap.CompactJSON(bootstrap.Options{
		NodeIDFromCommandLine: true,
		Cluster:               cluster,
		XDSAddress:            c.PilotAddress,
		XDSServerName:         c.PilotServerName,
		XDSRootCertFile:       CARootMountPath + "/" + CARootKey,
		Interception:          bootstrap.InterceptionRedirect,
		AdminAddress:          "127.0.0.1:" + strconv.Itoa(AdminPort),
		ReadinessAddress:      "0.0.0.0:" + strconv.Itoa(ReadinessPort),
		PrometheusAddress:     "0.0.0.0:" + strconv.Itoa(PrometheusPort),
		Labels:                labels,
	})
	if err != nil {
		return "", fmt.Errorf("building the proxy's bootstrap: %w", err)
	}
	return string(js), nil
}

// initContainer installs the capture. It needs NET_ADMIN (and NET_RAW, as Istio grants) as root
// in the pod's network namespace, and nothing else: every other capability is dropped.
func (c Config) initContainer() corev1.Container {
	return corev1.Container{
		Name:    InitContainerName,
		Image:   c.CaptureImage,
		Command: []string{CaptureCommand},
		Args:    CaptureArgs(),
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("10Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			RunAsUser:                ptr[int64](0),
			RunAsGroup:               ptr[int64](0),
			RunAsNonRoot:             ptr(false),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
		},
	}
}

// proxyContainer runs Envoy from boot, as the proxy user, with no capability. probers, when
// not empty, is the ISTIO_KUBE_APP_PROBERS value: Envoy does not read it, pilot does, from the
// Pod, as Istio's agent reads it from its environment.
func (c Config) proxyContainer(boot, probers string) corev1.Container {
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
		}}
	}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
	}
	if probers != "" {
		env = append(env, corev1.EnvVar{Name: appprobe.EnvName, Value: probers})
	}
	return corev1.Container{
		Name:    ProxyContainerName,
		Image:   c.ProxyImage,
		Command: []string{"envoy"},
		Args:    ProxyArgs(boot, c.ProxyConcurrency),
		Env:     env,
		Ports:   []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: PrometheusPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: bootstrap.ReadyPath,
				Port: intstr.FromInt32(ReadinessPort),
			}},
			InitialDelaySeconds: 1,
			PeriodSeconds:       2,
			TimeoutSeconds:      3,
			FailureThreshold:    4,
		},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		}},
		VolumeMounts: []corev1.VolumeMount{{Name: CARootVolumeName, MountPath: CARootMountPath, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr[int64](ProxyUID),
			RunAsGroup:               ptr[int64](ProxyGID),
			RunAsNonRoot:             ptr(true),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// ProxyArgs are Envoy's arguments in the proxy container. The bootstrap is passed inline with
// --config-yaml (JSON is YAML): with no agent, nothing in the pod could write a file for -c,
// and the bootstrap is small (a few KiB). --service-node sets node.id, see NodeIDArg. Hot
// restart is off, as it needs shared memory and is only for restarting in place, which a pod
// never does. The drain flags are those `pilot bootstrap` documents (bootstrap.DrainArgs), so
// a sidecar closes connections of a removed chain, a plaintext one after a change to STRICT
// say, within the same bound wherever it runs.
func ProxyArgs(boot string, concurrency int) []string {
	args := []string{
		"--config-yaml", boot,
		"--service-node", NodeIDArg,
		"--concurrency", strconv.Itoa(concurrency),
		"--disable-hot-restart",
	}
	args = append(args, bootstrap.DrainArgs()...)
	return append(args, "--log-level", "warning")
}

// CanonicalService is the workload's canonical service name and revision as Istio derives
// them: the service.istio.io/canonical-* labels, else app.kubernetes.io/name / app and
// app.kubernetes.io/version / version, else the workload's name and "latest".
func CanonicalService(pod *corev1.Pod) (name, revision string) {
	name = firstLabel(pod.Labels, CanonicalNameLabel, "app.kubernetes.io/name", "app")
	if name == "" {
		name = WorkloadName(pod)
	}
	revision = firstLabel(pod.Labels, CanonicalRevisionLabel, "app.kubernetes.io/version", "version")
	if revision == "" {
		revision = "latest"
	}
	return name, revision
}

// WorkloadName is the name of what created the pod: a Deployment's name (its ReplicaSet's,
// without the pod-template-hash), another controller's name, else the pod's name or, for a pod
// still being created by a controller, its generateName without the trailing "-".
func WorkloadName(pod *corev1.Pod) string {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if hash := pod.Labels["pod-template-hash"]; ref.Kind == "ReplicaSet" && hash != "" {
			return strings.TrimSuffix(ref.Name, "-"+hash)
		}
		return ref.Name
	}
	if pod.Name != "" {
		return pod.Name
	}
	if n := strings.TrimSuffix(pod.GenerateName, "-"); n != "" {
		return n
	}
	return "unknown"
}

// PodName is the pod's name for logs: its name, else its generateName followed by "*".
func PodName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

func setDefault(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func ptr[T any](v T) *T { return &v }
