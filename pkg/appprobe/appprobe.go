// Package appprobe is the contract between Skiff's sidecar injector and pilot for the health
// probes of an application under mTLS, in Istio's own format and names.
//
// The kubelet probes a pod's containers from outside the mesh, in plaintext: under a STRICT
// PeerAuthentication the sidecar's inbound chains would refuse an httpGet, tcpSocket or grpc
// probe on an application port. So, as Istio's injector does, Skiff's rewrites such a probe
// into an httpGet on the sidecar's status port, StatusPort (15020), at Path(CONTAINER, KIND)
// (/app-health/CONTAINER/livez|readyz|startupz), and keeps the original probes as JSON in the
// istio-proxy container's EnvName (ISTIO_KUBE_APP_PROBERS) variable. Istio's pilot-agent
// serves that port from the variable; Skiff has no agent, so pilot reads the variable from the
// Pod object and serves Envoy a listener on the port that answers for the application.
//
// The JSON is Istio's, byte for byte: a map from the probe's path to a Prober, whose action is
// the Kubernetes one with named ports resolved to numbers.
package appprobe

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	// StatusPort is the sidecar's port for rewritten probes: Istio's status port, which the
	// capture never redirects.
	StatusPort = 15020
	// EnvName is the istio-proxy container's environment variable holding the original probes.
	EnvName = "ISTIO_KUBE_APP_PROBERS"
	// RewriteAnnotation, set to "false" on a pod, keeps its probes as they are (Istio's
	// sidecar.istio.io/rewriteAppHTTPProbers). Any other value, or none, rewrites them.
	RewriteAnnotation = "sidecar.istio.io/rewriteAppHTTPProbers"
	// PathPrefix starts every rewritten probe's path.
	PathPrefix = "/app-health/"
	// proxyContainer is the container whose environment carries EnvName (Istio's istio-proxy;
	// package inject's ProxyContainerName, which a test there keeps equal).
	proxyContainer = "istio-proxy"
	// DefaultTimeoutSeconds is a probe's timeout when it names none, as in Kubernetes.
	DefaultTimeoutSeconds = 1
)

// Kind is which of a container's probes a path answers for, as the last segment of its path.
type Kind string

// The probes a container can have, by the path segment Istio gives each.
const (
	Readiness Kind = "readyz"
	Liveness  Kind = "livez"
	Startup   Kind = "startupz"
)

// Path is the rewritten probe's path for a container's probe of kind.
func Path(container string, kind Kind) string {
	return PathPrefix + container + "/" + string(kind)
}

// Prober is one original probe: exactly one of the actions, and the probe's timeout (0 for
// DefaultTimeoutSeconds). Its JSON is Istio's status.Prober.
type Prober struct {
	HTTPGet        *corev1.HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket      *corev1.TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC           *corev1.GRPCAction      `json:"grpc,omitempty"`
	TimeoutSeconds int32                   `json:"timeoutSeconds,omitempty"`
}

// Timeout is the probe's timeout in seconds, DefaultTimeoutSeconds when it names none.
func (p *Prober) Timeout() int32 {
	if p.TimeoutSeconds > 0 {
		return p.TimeoutSeconds
	}
	return DefaultTimeoutSeconds
}

// Port is the application port the probe checks.
func (p *Prober) Port() uint32 {
	switch {
	case p.HTTPGet != nil:
		return uint32(p.HTTPGet.Port.IntValue())
	case p.TCPSocket != nil:
		return uint32(p.TCPSocket.Port.IntValue())
	case p.GRPC != nil:
		return uint32(p.GRPC.Port)
	}
	return 0
}

// Probers are a pod's original probes by the path of their rewritten probe.
type Probers map[string]*Prober

// Paths are the probers' paths in order, so that what is built from them is stable.
func (ps Probers) Paths() []string { return slices.Sorted(maps.Keys(ps)) }

// Encode is the value of EnvName for ps: Istio's JSON (keys in order, as encoding/json writes
// maps), or "" when there are none, as Istio never writes "{}".
func (ps Probers) Encode() (string, error) {
	if len(ps) == 0 {
		return "", nil
	}
	js, err := json.Marshal(ps)
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", EnvName, err)
	}
	return string(js), nil
}

// FromPod returns the value of EnvName in the pod's istio-proxy container, its field path for
// messages, and whether there is one.
func FromPod(pod *corev1.Pod) (value, field string, ok bool) {
	for i, c := range pod.Spec.Containers {
		if c.Name != proxyContainer {
			continue
		}
		for j, e := range c.Env {
			if e.Name == EnvName {
				return e.Value, fmt.Sprintf("spec.containers[%d].env[%d] (%s)", i, j, EnvName), true
			}
		}
	}
	return "", "", false
}

// Parse reads a value of EnvName. It returns the probers that are usable and, joined, one
// error per problem: a value that is not JSON gives no probers; an entry that pilot could not
// serve (a path not of Path's form, no action or more than one, a named or out-of-range port,
// an unknown scheme, a header Envoy would reject) is left out and named in the error.
func Parse(value string) (Probers, error) {
	var raw map[string]*Prober
	if err := json.Unmarshal([]byte(value), &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object of probes: %w", err)
	}
	out := make(Probers, len(raw))
	var errs []error
	for _, path := range slices.Sorted(maps.Keys(raw)) {
		if err := check(path, raw[path]); err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", path, err))
			continue
		}
		out[path] = raw[path]
	}
	return out, errors.Join(errs...)
}

// check reports why pilot could not serve the prober of path, nil if it can.
func check(path string, p *Prober) error {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	container, kind, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || !validKind(Kind(kind)) {
		return fmt.Errorf("path must be %sCONTAINER/%s, %s or %s", PathPrefix, Readiness, Liveness, Startup)
	}
	if errs := validation.IsDNS1123Label(container); len(errs) > 0 {
		return fmt.Errorf("container %q: %s", container, strings.Join(errs, "; "))
	}
	if p == nil {
		return errors.New("no probe")
	}
	if p.TimeoutSeconds < 0 {
		return fmt.Errorf("timeoutSeconds %d is negative", p.TimeoutSeconds)
	}
	actions := 0
	for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		return fmt.Errorf("want exactly one of httpGet, tcpSocket and grpc, got %d", actions)
	}
	switch {
	case p.HTTPGet != nil:
		if err := checkPort("httpGet.port", p.HTTPGet.Port); err != nil {
			return err
		}
		return checkHTTPGet(p.HTTPGet)
	case p.TCPSocket != nil:
		return checkPort("tcpSocket.port", p.TCPSocket.Port)
	default:
		if p.GRPC.Port < 1 || p.GRPC.Port > 65535 {
			return fmt.Errorf("grpc.port must be 1-65535, got %d", p.GRPC.Port)
		}
		if s := p.GRPC.Service; s != nil && strings.ContainsAny(*s, "\x00\r\n") {
			return errors.New("grpc.service holds a control character")
		}
	}
	return nil
}

func validKind(k Kind) bool { return k == Readiness || k == Liveness || k == Startup }

// checkPort requires a number: the injector resolves a container's named ports when it
// writes the value, as Istio's does.
func checkPort(field string, port intstr.IntOrString) error {
	if port.Type == intstr.String {
		return fmt.Errorf("%s %q is a name: want the port's number", field, port.StrVal)
	}
	if port.IntVal < 1 || port.IntVal > 65535 {
		return fmt.Errorf("%s must be 1-65535, got %d", field, port.IntVal)
	}
	return nil
}

// checkHTTPGet refuses what Envoy would reject in the route that forwards the probe: a scheme
// other than HTTP and HTTPS, and paths and headers it cannot send.
func checkHTTPGet(a *corev1.HTTPGetAction) error {
	switch a.Scheme {
	case "", corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
	default:
		return fmt.Errorf("httpGet.scheme %q: want HTTP or HTTPS", a.Scheme)
	}
	if strings.ContainsAny(a.Path, "\x00\r\n") {
		return errors.New("httpGet.path holds a control character")
	}
	for i, h := range a.HTTPHeaders {
		if !isToken(h.Name) {
			return fmt.Errorf("httpGet.httpHeaders[%d].name %q is not an HTTP header name", i, h.Name)
		}
		if strings.ContainsAny(h.Value, "\x00\r\n") {
			return fmt.Errorf("httpGet.httpHeaders[%d].value holds a control character", i)
		}
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token, what a header name must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}
