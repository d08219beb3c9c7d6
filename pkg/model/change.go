package model

import (
	"maps"
	"reflect"
	"slices"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/config"
)

// EndpointsOnly reports whether next differs from prev at most in the addresses of endpoints
// and workloads: the change a scaled Deployment, a rescheduled Pod or an edited endpoint
// address makes. Such a change needs new ClusterLoadAssignments (and identity checks against
// the new addresses) but no translation, since listeners, routes and clusters name no endpoint
// address — except the clusters of DNS-resolved services, which list their endpoints inline,
// so a change there is not endpoints-only. Anything this cannot tell apart counts as a change:
// a false "no" only costs a translation, a false "yes" would serve stale configuration.
func EndpointsOnly(prev, next *Snapshot) bool {
	if prev == nil || next == nil || prev.Config == nil || next.Config == nil {
		return false
	}
	return sameConfigExcept(prev.Config, next.Config, endpointKinds) &&
		slices.EqualFunc(prev.Services, next.Services, sameServiceExceptAddresses) &&
		sameWorkloadsExceptAddresses(prev, next)
}

// endpointKinds are the Set fields whose objects reach translation only through the model's
// services, endpoints and workloads, which EndpointsOnly compares on their own.
var endpointKinds = map[string]bool{"ServiceEntries": true, "WorkloadEntries": true, "EndpointSlices": true, "Pods": true}

// sameConfigExcept compares every kind of object but those named in skip, whatever kinds Set
// gains: unchanged objects are usually the very same pointers (a folder's untouched files, an
// informer's cache), and others are compared in full.
func sameConfigExcept(a, b *config.Set, skip map[string]bool) bool {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	for i := range va.NumField() {
		if skip[va.Type().Field(i).Name] {
			continue
		}
		fa, fb := va.Field(i), vb.Field(i)
		if fa.Kind() == reflect.Pointer { // the mesh configuration
			if fa.Pointer() != fb.Pointer() && !proto.Equal(a.Mesh, b.Mesh) {
				return false
			}
			continue
		}
		if fa.Len() != fb.Len() {
			return false
		}
		for j := range fa.Len() {
			x, y := fa.Index(j), fb.Index(j)
			if x.Pointer() != y.Pointer() && !reflect.DeepEqual(x.Interface(), y.Interface()) {
				return false
			}
		}
	}
	return true
}

// sameServiceExceptAddresses compares two services as translation sees them; endpoint
// addresses may differ where the service's endpoints travel by EDS.
func sameServiceExceptAddresses(a, b *Service) bool {
	if a == b {
		return true
	}
	if a.Hostname != b.Hostname || a.Namespace != b.Namespace || a.Resolution != b.Resolution || a.Source != b.Source ||
		!slices.Equal(a.Addresses, b.Addresses) || !slices.Equal(a.Ports, b.Ports) || !reflect.DeepEqual(a.ExportTo, b.ExportTo) {
		return false
	}
	byEDS := a.Resolution == networking.ServiceEntry_STATIC
	return slices.EqualFunc(a.Endpoints, b.Endpoints, func(x, y *Endpoint) bool {
		return (byEDS || x.Address == y.Address) && x.ServiceAccount == y.ServiceAccount && x.Network == y.Network &&
			x.Locality == y.Locality && x.Weight == y.Weight && x.Source == y.Source &&
			maps.Equal(x.Ports, y.Ports) && maps.Equal(x.Labels, y.Labels)
	})
}

// sameWorkloadsExceptAddresses compares what translation reads of the workloads proxies are:
// their labels (Sidecar, policy and Gateway selection), a Pod's application probes (its
// app-health listener: a Pod recreated under its name, as a StatefulSet's, may have others),
// which workloads exist, and whether a WorkloadEntry can hold an identity at all
// (Workload.CanHoldIdentity: without one its proxy gets no default mTLS). Which service
// account, and the addresses, decide the identity granted, which pilot re-checks on every
// push anyway.
func sameWorkloadsExceptAddresses(prev, next *Snapshot) bool {
	if len(prev.pods) != len(next.pods) || len(prev.workloads) != len(next.workloads) {
		return false
	}
	for key, p := range prev.pods {
		q, ok := next.pods[key]
		if !ok || (p != q && (!maps.Equal(p.Labels, q.Labels) || !sameAppProbes(p, q))) {
			return false
		}
	}
	for key, w := range prev.workloads {
		v, ok := next.workloads[key]
		if !ok || (w != v && (!maps.Equal(w.Spec.Labels, v.Spec.Labels) ||
			workloadFromEntry(w).CanHoldIdentity() != workloadFromEntry(v).CanHoldIdentity())) {
			return false
		}
	}
	return true
}

// HTTPRoutesOnly reports whether next differs from prev at most in VirtualServices that route
// HTTP alone, before and after the change (no tcp or tls routes). Of a sidecar's
// configuration, such a change reaches only its route configurations: its listeners read
// VirtualServices only for tcp and tls routes, and its clusters and secrets not at all.
// Gateways read VirtualServices everywhere. As with EndpointsOnly, a false "no" only costs
// translations.
func HTTPRoutesOnly(prev, next *Snapshot) bool {
	if prev == nil || next == nil || prev.Config == nil || next.Config == nil {
		return false
	}
	if !sameConfigExcept(prev.Config, next.Config, map[string]bool{"VirtualServices": true}) {
		return false
	}
	key := func(vs *networkingv1.VirtualService) string { return vs.Namespace + "/" + vs.Name }
	before := make(map[string]*networkingv1.VirtualService, len(prev.Config.VirtualServices))
	for _, vs := range prev.Config.VirtualServices {
		before[key(vs)] = vs
	}
	for _, vs := range next.Config.VirtualServices {
		old, existed := before[key(vs)]
		delete(before, key(vs))
		if old == vs || (existed && reflect.DeepEqual(old, vs)) {
			continue
		}
		if !httpOnly(vs) || (existed && !httpOnly(old)) {
			return false
		}
	}
	for _, removed := range before {
		if !httpOnly(removed) {
			return false
		}
	}
	return true
}

// AuthorizationPoliciesOnly reports whether next differs from prev at most in
// AuthorizationPolicies. Of a sidecar's configuration such a change reaches only the RBAC
// rules its inbound filters fetch (translate.ExtensionConfigs): its listeners name those rules
// without holding them, and its clusters, routes and secrets never read policies. (A policy
// that selects by a label key nothing selected by before gives proxies other configuration
// keys; configurations new to a push are translated in full whatever its kind.) As with
// EndpointsOnly, a false "no" only costs translations.
func AuthorizationPoliciesOnly(prev, next *Snapshot) bool {
	if prev == nil || next == nil || prev.Config == nil || next.Config == nil {
		return false
	}
	return sameConfigExcept(prev.Config, next.Config, map[string]bool{"AuthorizationPolicies": true})
}

func httpOnly(vs *networkingv1.VirtualService) bool {
	return len(vs.Spec.GetTcp()) == 0 && len(vs.Spec.GetTls()) == 0
}

// sameAppProbes reports whether two Pods carry the same application probes, as written.
func sameAppProbes(p, q *corev1.Pod) bool {
	a, _, _ := appprobe.FromPod(p)
	b, _, _ := appprobe.FromPod(q)
	return a == b
}
