package model

import (
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Kubernetes Services become mesh services the way istiod's Kubernetes registry makes them:
// NAME.NAMESPACE.svc.cluster.local, the cluster IPs as addresses, the endpoints from the
// Service's EndpointSlices, each carrying its Pod's labels (so DestinationRule subsets select
// them) and service account (so mTLS verifies them).

// exportToAnnotation is Istio's per-Service visibility, a comma-separated exportTo list.
const exportToAnnotation = "networking.istio.io/exportTo"

// defaultServiceAccount is the one Kubernetes gives a Pod that names none.
const defaultServiceAccount = "default"

// appProtocols are the protocol names Istio recognises, in appProtocol or as a port-name
// prefix, and what Skiff does with them. Redis and MySQL are TCP to Istio unless filters it
// leaves off by default are enabled; gRPC-Web and WebSockets are HTTP.
var appProtocols = map[string]Protocol{
	"http":              HTTP,
	"http2":             HTTP2,
	"grpc":              GRPC,
	"grpc-web":          HTTP,
	"https":             HTTPS,
	"tls":               TLS,
	"tcp":               TCP,
	"mongo":             Mongo,
	"redis":             TCP,
	"mysql":             TCP,
	"udp":               UDP,
	"kubernetes.io/h2c": HTTP2,
	"kubernetes.io/ws":  HTTP,
	"kubernetes.io/wss": HTTPS,
}

// wellKnownTCPPorts are the ports istiod never sniffs when a Kubernetes port says nothing of
// its protocol: SMTP, DNS, MySQL and MongoDB, whose servers speak first, so a connection would
// wait for client bytes that never come. They are TCP.
var wellKnownTCPPorts = map[int32]bool{25: true, 53: true, 3306: true, 27017: true}

// KubernetesPortProtocol is istiod's protocol selection for a Service port (ConvertProtocol):
// UDP by the port's L4 protocol; else appProtocol when set, or the port name, either as a
// whole ("http", "kubernetes.io/h2c" for appProtocol only) or by its prefix before '-' (as in
// "http-web"). What none of them names is Unsupported, which sidecars sniff, except on the
// well-known server-first ports, which are TCP.
func KubernetesPortProtocol(port corev1.ServicePort) Protocol {
	if port.Protocol == corev1.ProtocolUDP {
		return UDP
	}
	name := strings.ToLower(port.Name)
	if port.AppProtocol != nil {
		name = strings.ToLower(*port.AppProtocol)
		if p, ok := appProtocols[name]; ok && strings.Contains(name, "/") {
			return p // Kubernetes' own names, which a port name cannot take
		}
	}
	if p, ok := appProtocols[name]; ok && !strings.Contains(name, "/") {
		return p
	}
	if strings.HasPrefix(name, "grpc-web") { // before the prefix split: it has a '-' itself
		return appProtocols["grpc-web"]
	}
	if prefix, _, ok := strings.Cut(name, "-"); ok {
		if p, ok := appProtocols[prefix]; ok {
			return p
		}
	}
	if wellKnownTCPPorts[port.Port] {
		return TCP
	}
	return Unsupported
}

// KubernetesHostname is the mesh hostname of a Service.
func KubernetesHostname(name, namespace string) string {
	return name + "." + namespace + "." + DefaultDomainSuffix
}

// servicesFromKubernetes makes one Service per Kubernetes Service of the set.
func servicesFromKubernetes(set *config.Set, pods map[string]*corev1.Pod) []*Service {
	slicesByService := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range set.EndpointSlices {
		key := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
		slicesByService[key] = append(slicesByService[key], es)
	}
	out := make([]*Service, 0, len(set.Services))
	for _, ks := range set.Services {
		out = append(out, serviceFromKubernetes(ks, slicesByService[ks.Namespace+"/"+ks.Name], pods))
	}
	return out
}

func serviceFromKubernetes(ks *corev1.Service, slices []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod) *Service {
	svc := &Service{
		Hostname:   KubernetesHostname(ks.Name, ks.Namespace),
		Namespace:  ks.Namespace,
		Resolution: networking.ServiceEntry_STATIC,
		ExportTo:   ParseVisibility(ks.Namespace, splitList(ks.Annotations[exportToAnnotation])),
		Source:     fmt.Sprintf("Service/%s/%s", ks.Namespace, ks.Name),
	}
	for _, p := range ks.Spec.Ports {
		port := Port{Name: p.Name, Number: uint32(p.Port), Protocol: KubernetesPortProtocol(p)}
		if p.TargetPort.IntValue() > 0 {
			port.TargetPort = uint32(p.TargetPort.IntValue())
		}
		svc.Ports = append(svc.Ports, port)
	}
	switch {
	case ks.Spec.Type == corev1.ServiceTypeExternalName:
		// An alias for a DNS name: Envoy resolves it, on the Service's own ports.
		svc.Resolution = networking.ServiceEntry_DNS
		svc.Endpoints = []*Endpoint{{Address: ks.Spec.ExternalName, Source: svc.Source}}
		for i := range svc.Ports {
			svc.Ports[i].TargetPort = 0
		}
		return svc
	case ks.Spec.ClusterIP == corev1.ClusterIPNone:
		// Headless: no virtual IP to route by, so the application's own destination is kept
		// (istiod's ORIGINAL_DST passthrough clusters).
		svc.Resolution = networking.ServiceEntry_NONE
	default:
		for _, ip := range ks.Spec.ClusterIPs {
			if ip != "" && ip != corev1.ClusterIPNone {
				svc.Addresses = append(svc.Addresses, ip)
			}
		}
		if len(svc.Addresses) == 0 && ks.Spec.ClusterIP != "" {
			svc.Addresses = []string{ks.Spec.ClusterIP}
		}
	}
	svc.Endpoints = endpointsFromSlices(slices, pods)
	return svc
}

// endpointsFromSlices turns ready EndpointSlice addresses into endpoints, once per address
// (a Pod can be in two slices while they are being rebalanced), in slice order.
func endpointsFromSlices(eps []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod) []*Endpoint {
	var out []*Endpoint
	seen := map[string]bool{}
	for _, es := range eps {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are not workloads
		}
		ports := map[string]uint32{}
		for _, p := range es.Ports {
			if p.Port != nil {
				ports[derefString(p.Name)] = uint32(*p.Port)
			}
		}
		for _, e := range es.Endpoints {
			// Istio sends only ready endpoints (publishNotReadyAddresses marks them ready).
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			var pod *corev1.Pod
			source := fmt.Sprintf("EndpointSlice/%s/%s", es.Namespace, es.Name)
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
				ns := cmpOr(ref.Namespace, es.Namespace)
				pod = pods[ns+"/"+ref.Name]
				source = "Pod/" + ns + "/" + ref.Name
			}
			for _, addr := range e.Addresses {
				if seen[addr] {
					continue
				}
				seen[addr] = true
				ep := &Endpoint{Address: addr, Ports: ports, Source: source}
				if pod != nil {
					ep.Labels = pod.Labels
					ep.ServiceAccount = podServiceAccount(pod)
				}
				out = append(out, ep)
			}
		}
	}
	return out
}

func podServiceAccount(pod *corev1.Pod) string {
	return cmpOr(pod.Spec.ServiceAccountName, defaultServiceAccount)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// splitList splits a comma-separated annotation value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return slices.Clip(out)
}
