package telemetry

import (
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/pkg/model"
)

// unknown is Istio's value for a label it could not resolve.
const unknown = "unknown"

// Cluster is source_cluster and destination_cluster for every workload: Istio's default
// cluster ID ("Kubernetes"), which Kiali's queries and Istio's dashboards expect of a mesh on
// one cluster.
const Cluster = "Kubernetes"

// peer is one end of a request, as Istio's labels name it.
type peer struct {
	workload, namespace, principal, app, version, canonicalService, canonicalRevision, cluster string
}

var unknownPeer = peer{unknown, unknown, unknown, unknown, unknown, unknown, unknown, unknown}

// peerOf names a workload as Istio's stats filter does: the workload is what created the Pod
// (a Deployment's name), app and version its labels, the canonical service and revision from
// the service.istio.io labels (inject.CanonicalService), the principal its service account's
// SPIFFE ID. A WorkloadEntry is its own workload.
func peerOf(snap *model.Snapshot, w *model.Workload, trustDomain string) peer {
	if w == nil {
		return unknownPeer
	}
	pod := snap.Pod(w.Namespace, w.Name)
	if pod == nil || w.Kind != "Pod" {
		pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace, Labels: w.Labels}}
	}
	p := peer{workload: inject.WorkloadName(pod), namespace: w.Namespace, principal: unknown,
		app: labelOr(w.Labels, "app"), version: labelOr(w.Labels, "version"), cluster: Cluster}
	p.canonicalService, p.canonicalRevision = inject.CanonicalService(pod)
	if w.ServiceAccount != "" {
		p.principal = "spiffe://" + trustDomain + "/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
	}
	return p
}

func labelOr(labels map[string]string, key string) string {
	if v := labels[key]; v != "" {
		return v
	}
	return unknown
}

// addressOf is the IP of an Envoy socket address, invalid if none.
func addressOf(a *corev3.Address) netip.Addr {
	ip, err := netip.ParseAddr(a.GetSocketAddress().GetAddress())
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// service is the destination_service* labels.
type service struct{ host, name, namespace string }

var unknownService = service{unknown, unknown, unknown}

// serviceOfHost names a service host: a Kubernetes-style host NAME.NAMESPACE.svc.DOMAIN by its
// first two labels, as Istio does; any other host is its own name, in the namespace of the
// ServiceEntry that declares it.
func serviceOfHost(snap *model.Snapshot, host, proxyNamespace string) service {
	s := service{host: host, name: host, namespace: unknown}
	if parts := strings.Split(host, "."); len(parts) > 2 && parts[2] == "svc" {
		s.name, s.namespace = parts[0], parts[1]
	}
	if svc := snap.Service(host, proxyNamespace); svc != nil {
		s.namespace = svc.Namespace
	}
	return s
}

// outboundService is the service of an outbound cluster `outbound|PORT|SUBSET|HOST`; other
// clusters (PassthroughCluster, BlackHoleCluster) name themselves, as in Istio.
func outboundService(snap *model.Snapshot, cluster, proxyNamespace string) service {
	parts := strings.Split(cluster, "|")
	switch {
	case len(parts) == 4 && parts[0] == "outbound":
		return serviceOfHost(snap, parts[3], proxyNamespace)
	case cluster == "":
		return unknownService
	}
	return service{cluster, cluster, unknown}
}

// inboundService is the service the local workload serves on the port of an inbound cluster
// `inbound|PORT||`: the first by hostname whose endpoint for this workload listens there. A
// port no service declares (a Sidecar ingress port alone) falls back to the request's
// authority, as Istio falls back to the Host header.
func inboundService(snap *model.Snapshot, w *model.Workload, cluster, authority string) service {
	parts := strings.Split(cluster, "|")
	if w != nil && len(parts) == 4 && parts[0] == "inbound" {
		if port, err := strconv.ParseUint(parts[1], 10, 32); err == nil {
			for _, se := range snap.EndpointsFrom(w.Source()) {
				for _, p := range se.Service.Ports {
					if se.Endpoint.PortFor(p) == uint32(port) {
						return serviceOfHost(snap, se.Service.Hostname, w.Namespace)
					}
				}
			}
		}
	}
	if host, _, _ := strings.Cut(authority, ":"); host != "" {
		return serviceOfHost(snap, host, "")
	}
	return unknownService
}

// peerPrincipal is the URI SAN of the downstream's certificate: the caller's identity, proved
// by mTLS, on the destination reporter.
func peerPrincipal(tls *accesslogdatav3.TLSProperties) string {
	for _, san := range tls.GetPeerCertificateProperties().GetSubjectAltName() {
		if uri := san.GetUri(); uri != "" {
			return uri
		}
	}
	return ""
}

// responseFlags are Envoy's short response flags, comma-separated, "-" when none (Istio's
// response_flags).
func responseFlags(f *accesslogdatav3.ResponseFlags) string {
	if f == nil {
		return "-"
	}
	var out []string
	add := func(set bool, code string) {
		if set {
			out = append(out, code)
		}
	}
	add(f.FailedLocalHealthcheck, "LH")
	add(f.NoHealthyUpstream, "UH")
	add(f.UpstreamRequestTimeout, "UT")
	add(f.LocalReset, "LR")
	add(f.UpstreamRemoteReset, "UR")
	add(f.UpstreamConnectionFailure, "UF")
	add(f.UpstreamConnectionTermination, "UC")
	add(f.UpstreamOverflow, "UO")
	add(f.NoRouteFound, "NR")
	add(f.DelayInjected, "DI")
	add(f.FaultInjected, "FI")
	add(f.RateLimited, "RL")
	add(f.UnauthorizedDetails != nil, "UAEX")
	add(f.RateLimitServiceError, "RLSE")
	add(f.DownstreamConnectionTermination, "DC")
	add(f.UpstreamRetryLimitExceeded, "URX")
	add(f.StreamIdleTimeout, "SI")
	add(f.InvalidEnvoyRequestHeaders, "IH")
	add(f.DownstreamProtocolError, "DPE")
	add(f.UpstreamMaxStreamDurationReached, "UMSDR")
	add(f.ResponseFromCacheFilter, "RFCF")
	add(f.NoFilterConfigFound, "NFCF")
	add(f.DurationTimeout, "DT")
	add(f.UpstreamProtocolError, "UPE")
	add(f.NoClusterFound, "NC")
	add(f.OverloadManager, "OM")
	add(f.DnsResolutionFailure, "DF")
	add(f.DownstreamRemoteReset, "DR")
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}
