// Package inject is Skiff's sidecar injector: the logic of the mutating admission webhook that
// adds an Envoy sidecar, and the init container that captures the pod's traffic for it, to the
// pods Skiff is asked to mesh. It is pure logic on Kubernetes API types; the HTTPS server, the
// namespace informer and the TLS certificates live in cmd/sidecar-injector.
//
// Three steps, each usable on its own:
//
//   - Decide says whether a pod is Skiff's to inject, with Istio's labels and revisions (see
//     Decide for the rules), and always gives the reason, which the webhook logs.
//   - Config.Inject returns the mutated pod: init container istio-init running skiff-capture,
//     container istio-proxy running Envoy, the trust bundle volume, Istio's annotations and
//     labels, and the application's probes pointed at the sidecar's status port (probes.go).
//     Patch turns original and mutated pod into the RFC 6902 JSONPatch the API server applies.
//   - Handler reads an AdmissionReview (admission.k8s.io/v1), decides, injects and answers.
//
// There is no agent process in the pod, unlike Istio's pilot-agent: Envoy starts from a static
// bootstrap (package bootstrap) passed on its command line, reads pilot's root certificate from
// the istio-ca-root-cert ConfigMap that pilot publishes in every namespace, and gets its
// workload certificate from pilot over SDS.
package inject

// Well-known names, Istio's, so that tools written for Istio (kubectl plugins, dashboards,
// istioctl's checks) read an injected pod the same way.
const (
	// InitContainerName is the init container that installs the traffic capture.
	InitContainerName = "istio-init"
	// ProxyContainerName is the sidecar container running Envoy.
	ProxyContainerName = "istio-proxy"
	// CARootVolumeName is the volume of the CARootConfigMap, mounted at CARootMountPath.
	CARootVolumeName = "istiod-ca-cert"
	// CARootConfigMap is the ConfigMap in which pilot publishes the mesh's root certificate, in
	// every namespace, under CARootKey.
	CARootConfigMap = "istio-ca-root-cert"
	// CARootKey is the ConfigMap key of the PEM root certificate.
	CARootKey = "root-cert.pem"
	// CARootMountPath is where the proxy container sees the ConfigMap.
	CARootMountPath = "/var/run/secrets/istio"

	// StatusAnnotation marks an injected pod and lists what was added; its presence alone stops
	// a second injection.
	StatusAnnotation = "sidecar.istio.io/status"
	// InjectLabel is the per-pod opt-in ("true") or opt-out ("false") label (and, for old
	// manifests, annotation).
	InjectLabel = "sidecar.istio.io/inject"
	// NamespaceInjectionLabel is the namespace label istio-injection=enabled|disabled.
	NamespaceInjectionLabel = "istio-injection"
	// RevisionLabel, istio.io/rev, names the control plane revision that injects a pod or a
	// namespace's pods.
	RevisionLabel = "istio.io/rev"
	// DefaultRevisionName is the revision the default injector answers to besides its own.
	DefaultRevisionName = "default"

	// TLSModeLabel tells other proxies that this workload speaks Istio mTLS (auto-mTLS).
	TLSModeLabel = "security.istio.io/tlsMode"
	// CanonicalNameLabel and CanonicalRevisionLabel are the workload's canonical service.
	CanonicalNameLabel     = "service.istio.io/canonical-name"
	CanonicalRevisionLabel = "service.istio.io/canonical-revision"
	// DefaultContainerAnnotation makes kubectl exec/logs pick the application container.
	DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
)
