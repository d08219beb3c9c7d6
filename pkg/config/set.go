package config

import (
	"cmp"
	"slices"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Object is one decoded configuration object: a pointer to one of the v1 client-go types a Set
// holds (*networkingv1.ServiceEntry, *securityv1.AuthorizationPolicy, ...), with TypeMeta set to
// the v1 apiVersion and kind whatever version the file used.
type Object interface {
	metav1.Object
	runtime.Object
}

// Set is one consistent view of the configuration folder. Each slice is sorted by namespace,
// then name, so that everything built from a Set is deterministic.
//
// The objects may be shared with other Sets returned by the same Loader: treat them as
// read-only.
type Set struct {
	ServiceEntries        []*networkingv1.ServiceEntry
	WorkloadEntries       []*networkingv1.WorkloadEntry
	VirtualServices       []*networkingv1.VirtualService
	DestinationRules      []*networkingv1.DestinationRule
	Gateways              []*networkingv1.Gateway
	Sidecars              []*networkingv1.Sidecar
	PeerAuthentications   []*securityv1.PeerAuthentication
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	Telemetries           []*telemetryv1.Telemetry
	// Secrets are kubernetes.io/tls Secrets, the credentials Gateway servers name. They hold
	// private keys: never log or print them.
	Secrets []*corev1.Secret

	// The Kubernetes service registry and workloads: Services with their EndpointSlices
	// become mesh services, Pods give endpoints their labels and service accounts and
	// proxies their identity.
	Namespaces     []*corev1.Namespace
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*corev1.Pod

	// Mesh is the mesh configuration (Istio's MeshConfig: telemetry providers, access log
	// defaults), from pilot's --mesh-config file or the ConfigMap istio in Kubernetes mode,
	// with Skiff's defaults applied (see ParseMeshConfig). nil means DefaultMeshConfig.
	Mesh *meshconfig.MeshConfig
}

// NewSet sorts objects into a Set. Objects of types a Set does not hold are ignored; Decode
// never returns such objects.
func NewSet(objects ...Object) *Set {
	s := &Set{}
	for _, o := range objects {
		switch o := o.(type) {
		case *networkingv1.ServiceEntry:
			s.ServiceEntries = append(s.ServiceEntries, o)
		case *networkingv1.WorkloadEntry:
			s.WorkloadEntries = append(s.WorkloadEntries, o)
		case *networkingv1.VirtualService:
			s.VirtualServices = append(s.VirtualServices, o)
		case *networkingv1.DestinationRule:
			s.DestinationRules = append(s.DestinationRules, o)
		case *networkingv1.Gateway:
			s.Gateways = append(s.Gateways, o)
		case *networkingv1.Sidecar:
			s.Sidecars = append(s.Sidecars, o)
		case *securityv1.PeerAuthentication:
			s.PeerAuthentications = append(s.PeerAuthentications, o)
		case *securityv1.AuthorizationPolicy:
			s.AuthorizationPolicies = append(s.AuthorizationPolicies, o)
		case *telemetryv1.Telemetry:
			s.Telemetries = append(s.Telemetries, o)
		case *corev1.Secret:
			s.Secrets = append(s.Secrets, o)
		case *corev1.Namespace:
			s.Namespaces = append(s.Namespaces, o)
		case *corev1.Service:
			s.Services = append(s.Services, o)
		case *discoveryv1.EndpointSlice:
			s.EndpointSlices = append(s.EndpointSlices, o)
		case *corev1.Pod:
			s.Pods = append(s.Pods, o)
		}
	}
	sortObjects(s.ServiceEntries)
	sortObjects(s.WorkloadEntries)
	sortObjects(s.VirtualServices)
	sortObjects(s.DestinationRules)
	sortObjects(s.Gateways)
	sortObjects(s.Sidecars)
	sortObjects(s.PeerAuthentications)
	sortObjects(s.AuthorizationPolicies)
	sortObjects(s.Telemetries)
	sortObjects(s.Secrets)
	sortObjects(s.Namespaces)
	sortObjects(s.Services)
	sortObjects(s.EndpointSlices)
	sortObjects(s.Pods)
	return s
}

// Objects returns every object of the set, kind by kind in the order of the Set's fields.
func (s *Set) Objects() []Object {
	if s == nil {
		return nil
	}
	out := make([]Object, 0, s.Len())
	out = appendObjects(out, s.ServiceEntries)
	out = appendObjects(out, s.WorkloadEntries)
	out = appendObjects(out, s.VirtualServices)
	out = appendObjects(out, s.DestinationRules)
	out = appendObjects(out, s.Gateways)
	out = appendObjects(out, s.Sidecars)
	out = appendObjects(out, s.PeerAuthentications)
	out = appendObjects(out, s.AuthorizationPolicies)
	out = appendObjects(out, s.Telemetries)
	out = appendObjects(out, s.Secrets)
	out = appendObjects(out, s.Namespaces)
	out = appendObjects(out, s.Services)
	out = appendObjects(out, s.EndpointSlices)
	out = appendObjects(out, s.Pods)
	return out
}

// Len is the number of objects in the set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.ServiceEntries) + len(s.WorkloadEntries) + len(s.VirtualServices) +
		len(s.DestinationRules) + len(s.Gateways) + len(s.Sidecars) +
		len(s.PeerAuthentications) + len(s.AuthorizationPolicies) + len(s.Telemetries) + len(s.Secrets) +
		len(s.Namespaces) + len(s.Services) + len(s.EndpointSlices) + len(s.Pods)
}

func appendObjects[T Object](out []Object, in []T) []Object {
	for _, o := range in {
		out = append(out, o)
	}
	return out
}

func sortObjects[T Object](objs []T) {
	slices.SortStableFunc(objs, func(a, b T) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// KindOf returns the kind of an object, such as "VirtualService".
func KindOf(o Object) string {
	if k := o.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	// Objects built in code may lack TypeMeta; the Go type still says what they are.
	switch o.(type) {
	case *networkingv1.ServiceEntry:
		return "ServiceEntry"
	case *networkingv1.WorkloadEntry:
		return "WorkloadEntry"
	case *networkingv1.VirtualService:
		return "VirtualService"
	case *networkingv1.DestinationRule:
		return "DestinationRule"
	case *networkingv1.Gateway:
		return "Gateway"
	case *networkingv1.Sidecar:
		return "Sidecar"
	case *securityv1.PeerAuthentication:
		return "PeerAuthentication"
	case *securityv1.AuthorizationPolicy:
		return "AuthorizationPolicy"
	case *telemetryv1.Telemetry:
		return "Telemetry"
	case *corev1.Secret:
		return secretKind
	case *corev1.Namespace:
		return namespaceKind
	case *corev1.Service:
		return serviceKind
	case *discoveryv1.EndpointSlice:
		return endpointSliceKind
	case *corev1.Pod:
		return podKind
	}
	return ""
}
