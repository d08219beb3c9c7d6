package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// MeshGateway is the reserved gateway name meaning "the sidecars".
const MeshGateway = "mesh"

// Snapshot is the immutable mesh model for one configuration version.
type Snapshot struct {
	// Services are sorted by hostname, then namespace.
	Services         []*Service
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	// Config is the validated input the snapshot was built from.
	Config *config.Set

	servicesByHost map[string][]*Service
	// endpointsBySource are the endpoints each workload (Endpoint.Source) backs, so a proxy's
	// inbound ports are found without walking every service.
	endpointsBySource map[string][]ServiceEndpoint
	// endpointsByAddress are the endpoints at each IP, for proxies that name no workload
	// (serving.go).
	endpointsByAddress map[netip.Addr][]ServiceEndpoint
	// selectorKeys are the label keys some object selects proxies by, trafficSelectorKeys those
	// that objects other than policies select by (selectors.go).
	selectorKeys, trafficSelectorKeys map[string]bool
	workloads                         map[string]*networkingv1.WorkloadEntry
	pods                              map[string]*corev1.Pod
	// Routing objects by the hosts they name, resolved once here rather than on every lookup:
	// exact hosts in a map, wildcard hosts in a list, each in configuration order.
	virtualServices  hostIndex[*networkingv1.VirtualService]
	destinationRules hostIndex[*networkingv1.DestinationRule]
	// derived holds what translation derives from the snapshot alone (see Derived).
	derived sync.Map
}

// hostIndex finds the objects that name a host, exactly or by wildcard.
type hostIndex[T any] struct {
	exact    map[string][]T
	wildcard []wildcardEntry[T]
}

type wildcardEntry[T any] struct {
	host   string
	object T
}

func (ix *hostIndex[T]) add(host string, object T) {
	if strings.HasPrefix(host, "*") {
		ix.wildcard = append(ix.wildcard, wildcardEntry[T]{host, object})
		return
	}
	if ix.exact == nil {
		ix.exact = map[string][]T{}
	}
	ix.exact[host] = append(ix.exact[host], object)
}

// lookup returns the objects naming hostname exactly, then those whose wildcard covers it.
func (ix *hostIndex[T]) lookup(hostname string) (exact []T, wildcard []wildcardEntry[T]) {
	for _, w := range ix.wildcard {
		if HostMatches(w.host, hostname) {
			wildcard = append(wildcard, w)
		}
	}
	return ix.exact[hostname], wildcard
}

// Build indexes a validated configuration set. It never fails: the loader has rejected
// anything malformed, and references to things that do not exist simply match nothing, as in Istio.
func Build(set *config.Set) *Snapshot {
	if set == nil {
		set = &config.Set{}
	}
	s := &Snapshot{
		VirtualServices:  set.VirtualServices,
		DestinationRules: set.DestinationRules,
		Config:           set,
		servicesByHost:   map[string][]*Service{},
		workloads:        map[string]*networkingv1.WorkloadEntry{},
		pods:             make(map[string]*corev1.Pod, len(set.Pods)),
	}
	s.selectorKeys, s.trafficSelectorKeys = selectorLabelKeys(set)
	for _, pod := range set.Pods {
		s.pods[pod.Namespace+"/"+pod.Name] = pod
	}
	for _, we := range set.WorkloadEntries {
		s.workloads[we.Namespace+"/"+we.Name] = we
	}
	for _, vs := range set.VirtualServices {
		for _, h := range vs.Spec.Hosts {
			s.virtualServices.add(ResolveHost(h, vs.Namespace), vs)
		}
	}
	for _, dr := range mergeDestinationRules(set.DestinationRules) {
		s.destinationRules.add(ResolveHost(dr.Spec.Host, dr.Namespace), dr)
	}
	for _, se := range set.ServiceEntries {
		s.Services = append(s.Services, servicesFromServiceEntry(se, set.WorkloadEntries)...)
	}
	s.Services = append(s.Services, servicesFromKubernetes(set, s.pods)...)
	slices.SortStableFunc(s.Services, func(a, b *Service) int {
		return cmp.Or(cmp.Compare(a.Hostname, b.Hostname), cmp.Compare(a.Namespace, b.Namespace))
	})
	s.endpointsBySource = map[string][]ServiceEndpoint{}
	for _, svc := range s.Services {
		s.servicesByHost[svc.Hostname] = append(s.servicesByHost[svc.Hostname], svc)
		for _, ep := range svc.Endpoints {
			s.endpointsBySource[ep.Source] = append(s.endpointsBySource[ep.Source], ServiceEndpoint{svc, ep})
			s.indexByAddress(svc, ep)
		}
	}
	return s
}

// ServiceEndpoint is one endpoint with the service it belongs to.
type ServiceEndpoint struct {
	Service  *Service
	Endpoint *Endpoint
}

// EndpointsFrom returns the endpoints that source (Endpoint.Source, such as
// "Pod/default/reviews-v1-abc") declares, in service order.
func (s *Snapshot) EndpointsFrom(source string) []ServiceEndpoint { return s.endpointsBySource[source] }

// servicesFromServiceEntry makes one Service per host of the entry.
func servicesFromServiceEntry(se *networkingv1.ServiceEntry, workloads []*networkingv1.WorkloadEntry) []*Service {
	spec := &se.Spec
	ports := make([]Port, 0, len(spec.Ports))
	for _, p := range spec.Ports {
		ports = append(ports, Port{Name: p.Name, Number: p.Number, Protocol: ParseProtocol(p.Protocol), TargetPort: p.TargetPort})
	}
	source := fmt.Sprintf("ServiceEntry/%s/%s", se.Namespace, se.Name)
	var endpoints []*Endpoint
	for i, we := range spec.Endpoints {
		endpoints = append(endpoints, endpointFromWorkloadEntry(we, fmt.Sprintf("%s endpoints[%d]", source, i)))
	}
	if sel := spec.WorkloadSelector; sel != nil {
		// A workloadSelector picks WorkloadEntries of the entry's own namespace.
		for _, we := range workloads {
			if we.Namespace == se.Namespace && labelsMatch(we.Spec.Labels, sel.Labels) {
				endpoints = append(endpoints, endpointFromWorkloadEntry(&we.Spec, fmt.Sprintf("WorkloadEntry/%s/%s", we.Namespace, we.Name)))
			}
		}
	}
	visibility := ParseVisibility(se.Namespace, spec.ExportTo)
	services := make([]*Service, 0, len(spec.Hosts))
	for _, host := range spec.Hosts {
		services = append(services, &Service{
			Hostname:   ResolveHost(host, se.Namespace),
			Namespace:  se.Namespace,
			Addresses:  spec.Addresses,
			Ports:      ports,
			Resolution: spec.Resolution,
			ExportTo:   visibility,
			Endpoints:  endpoints,
			Source:     source,
		})
	}
	return services
}

func endpointFromWorkloadEntry(we *networking.WorkloadEntry, source string) *Endpoint {
	return &Endpoint{
		Address:        we.Address,
		Ports:          we.Ports,
		Labels:         we.Labels,
		ServiceAccount: we.ServiceAccount,
		Network:        we.Network,
		Locality:       we.Locality,
		Weight:         we.Weight,
		Source:         source,
	}
}

// VisibleServices lists the services a proxy in namespace ns can see, one per hostname: when
// several namespaces declare one host, the proxy's own namespace wins, then the first by name.
func (s *Snapshot) VisibleServices(ns string) []*Service {
	out := make([]*Service, 0, len(s.Services))
	for i := 0; i < len(s.Services); {
		host := s.Services[i].Hostname
		j := i
		for j < len(s.Services) && s.Services[j].Hostname == host {
			j++
		}
		if svc := pickService(s.Services[i:j], ns); svc != nil {
			out = append(out, svc)
		}
		i = j
	}
	return out
}

// Service returns the service with the given hostname as a proxy in namespace ns sees it.
func (s *Snapshot) Service(hostname, ns string) *Service {
	return pickService(s.servicesByHost[hostname], ns)
}

func pickService(candidates []*Service, ns string) *Service {
	var first *Service
	for _, svc := range candidates {
		if !svc.ExportTo.VisibleTo(ns) {
			continue
		}
		if svc.Namespace == ns {
			return svc
		}
		if first == nil {
			first = svc
		}
	}
	return first
}

// VirtualServiceFor returns the VirtualService that routes hostname for proxies in namespace ns
// attached to gateway (MeshGateway for sidecars). Like istiod for sidecars, Skiff does not merge
// several VirtualServices that name one host: one wins, and the others do not apply to that host
// (istiod merges only for gateways, and delegates, which need VirtualServices without hosts).
// istiod's precedence is kept: an exact host beats a wildcard and a longer wildcard a shorter
// one; for the same host a VirtualService exported to the proxy's namespace only (exportTo "."
// in its own namespace, or naming it) beats one exported to every namespace; then the oldest
// wins, which without creation times is the first in namespace/name order.
func (s *Snapshot) VirtualServiceFor(hostname, ns, gateway string) *networkingv1.VirtualService {
	var best *networkingv1.VirtualService
	bestHost, bestTier := -1, 0
	consider := func(vs *networkingv1.VirtualService, hostRank int) {
		vis := ParseVisibility(vs.Namespace, vs.Spec.ExportTo)
		if !vis.VisibleTo(ns) || !boundTo(vs, gateway) {
			return
		}
		tier := exportTier(vis, vs.Namespace, ns)
		// Strictly better only: among equals the earlier (older) one stays.
		if hostRank > bestHost || (hostRank == bestHost && tier < bestTier) {
			best, bestHost, bestTier = vs, hostRank, tier
		}
	}
	exact, wildcard := s.virtualServices.lookup(hostname)
	for _, vs := range exact {
		consider(vs, 1<<20)
	}
	for _, w := range wildcard {
		consider(w.object, len(w.host))
	}
	return best
}

// exportTier orders VirtualServices for one host as istiod imports them into a proxy's scope:
// those private to the proxy's namespace (0), those another namespace exports to it by name
// (1), then those exported to everyone (2).
func exportTier(vis Visibility, vsNamespace, proxyNamespace string) int {
	switch {
	case vis.public:
		return 2
	case vsNamespace == proxyNamespace:
		return 0
	default:
		return 1
	}
}

// boundTo reports whether the VirtualService applies to the gateway: no gateways means the mesh.
func boundTo(vs *networkingv1.VirtualService, gateway string) bool {
	if len(vs.Spec.Gateways) == 0 {
		return gateway == MeshGateway
	}
	for _, g := range vs.Spec.Gateways {
		if g == gateway || (!strings.Contains(g, "/") && vs.Namespace+"/"+g == gateway) {
			return true
		}
	}
	return false
}

// DestinationRuleFor returns the DestinationRule for hostname as seen from namespace ns: an
// exact host beats a wildcard and a longer wildcard a shorter one; among equals the proxy's own
// namespace wins, then configuration order.
func (s *Snapshot) DestinationRuleFor(hostname, ns string) *networkingv1.DestinationRule {
	exact, wildcard := s.destinationRules.lookup(hostname)
	var best *networkingv1.DestinationRule
	bestScore := -1
	consider := func(dr *networkingv1.DestinationRule, score int) {
		if !ParseVisibility(dr.Namespace, dr.Spec.ExportTo).VisibleTo(ns) {
			return
		}
		if dr.Namespace == ns {
			score++
		}
		if score > bestScore {
			best, bestScore = dr, score
		}
	}
	for _, dr := range exact {
		consider(dr, 1<<20)
	}
	for _, w := range wildcard {
		consider(w.object, 2*len(w.host))
	}
	return best
}

// mergeDestinationRules folds DestinationRules of one namespace that name the same host into
// one, as istiod does: the first (in configuration order) keeps its traffic policy and exportTo,
// later ones add the subsets it lacks and supply a traffic policy only if it has none. Rules
// with a workloadSelector are kept apart. The inputs are never modified.
func mergeDestinationRules(rules []*networkingv1.DestinationRule) []*networkingv1.DestinationRule {
	out := make([]*networkingv1.DestinationRule, 0, len(rules))
	first := map[string]int{} // namespace/host → index in out
	for _, dr := range rules {
		if dr.Spec.WorkloadSelector != nil {
			out = append(out, dr)
			continue
		}
		key := dr.Namespace + "/" + ResolveHost(dr.Spec.Host, dr.Namespace)
		i, seen := first[key]
		if !seen {
			first[key] = len(out)
			out = append(out, dr)
			continue
		}
		base := out[i]
		merged := &networkingv1.DestinationRule{TypeMeta: base.TypeMeta, ObjectMeta: base.ObjectMeta}
		proto.Merge(&merged.Spec, &base.Spec)
		if merged.Spec.TrafficPolicy == nil && dr.Spec.TrafficPolicy != nil {
			merged.Spec.TrafficPolicy = proto.Clone(dr.Spec.TrafficPolicy).(*networking.TrafficPolicy)
		}
		for _, subset := range dr.Spec.Subsets {
			if !slices.ContainsFunc(merged.Spec.Subsets, func(x *networking.Subset) bool { return x.Name == subset.Name }) {
				merged.Spec.Subsets = append(merged.Spec.Subsets, proto.Clone(subset).(*networking.Subset))
			}
		}
		out[i] = merged
	}
	return out
}
