package translate

import (
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Description is what applies to one proxy, as `skiffctl describe` shows it: the objects
// translation reads for it and the mTLS mode of each direction. It is computed by the same
// functions translation calls, so it cannot drift from what the proxy is served.
type Description struct {
	Proxy     string `json:"proxy"`
	Type      string `json:"type"`
	Namespace string `json:"namespace"`
	// Workload is the Pod or WorkloadEntry the node ID names (KIND/NAMESPACE/NAME), empty when
	// it names none; Labels are the labels translation selects by.
	Workload       string            `json:"workload,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	ServiceAccount string            `json:"service_account,omitempty"`
	// Sidecar is the Sidecar resource that scopes the proxy, if any.
	Sidecar  *ObjectRef  `json:"sidecar,omitempty"`
	Gateways []ObjectRef `json:"gateways,omitempty"`
	// GatewayVirtualServices are the VirtualServices bound to the Gateways above.
	GatewayVirtualServices []ObjectRef `json:"gateway_virtual_services,omitempty"`
	PeerAuthentications    []ObjectRef `json:"peer_authentications,omitempty"`
	AuthorizationPolicies  []PolicyRef `json:"authorization_policies,omitempty"`
	// ExposedBy are the gateway VirtualServices that route to a service the proxy's workload
	// serves, each followed by its Gateways (istioctl describe's "Exposed on Ingress Gateway").
	ExposedBy []ObjectRef         `json:"exposed_by,omitempty"`
	Inbound   InboundDescription  `json:"inbound"`
	Outbound  []OutboundDescribed `json:"outbound,omitempty"`
}

// ObjectRef names a configuration object.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r ObjectRef) String() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// PolicyRef is an AuthorizationPolicy with the action it is enforced with.
type PolicyRef struct {
	ObjectRef
	Action string `json:"action"`
}

// InboundDescription is what the proxy accepts: its workload's mTLS mode (PeerAuthentication
// composed as istiod composes it) and the service ports it serves, each with its own mode.
type InboundDescription struct {
	MTLS  string        `json:"mtls"`
	Ports []InboundPort `json:"ports,omitempty"`
}

// InboundPort is one service port the proxy's workload serves.
type InboundPort struct {
	Service    string `json:"service"`
	Port       uint32 `json:"port"`
	TargetPort uint32 `json:"target_port"`
	MTLS       string `json:"mtls"`
}

// OutboundDescribed is one service the proxy sees, with the VirtualService and
// DestinationRule that apply to its traffic there and the TLS it originates.
type OutboundDescribed struct {
	Host            string     `json:"host"`
	VirtualService  *ObjectRef `json:"virtual_service,omitempty"`
	DestinationRule *ObjectRef `json:"destination_rule,omitempty"`
	// MTLS is the client side: the DestinationRule's tls.mode when it sets one, else
	// auto-mTLS's choice ("ISTIO_MUTUAL (auto)" or "DISABLE (auto)").
	MTLS string `json:"mtls"`
}

// Describe says what applies to proxy (its node ID parsed, labels as the proxy presented
// them) in snap.
func Describe(snap *model.Snapshot, proxy *model.Proxy) *Description {
	proxy = snap.ResolveProxy(proxy)
	d := &Description{Proxy: proxy.NodeID, Type: string(proxy.Type), Namespace: proxy.Namespace, Labels: proxy.Labels}
	if w := snap.Workload(proxy.Namespace, proxy.Name); w != nil {
		d.Workload, d.ServiceAccount = w.Source(), w.ServiceAccount
	}
	if sc := snap.SidecarFor(proxy); sc != nil {
		d.Sidecar = &ObjectRef{"Sidecar", sc.Namespace, sc.Name}
	}
	if proxy.Type == model.Router {
		d.describeGateways(snap, proxy)
	}
	d.PeerAuthentications = peerAuthenticationsFor(snap, proxy)
	policies := authorizationPoliciesFor(snap, proxy)
	// In the order Envoy checks them: DENY before ALLOW; AUDIT only logs.
	for _, action := range []rbacv3.RBAC_Action{rbacv3.RBAC_DENY, rbacv3.RBAC_ALLOW, rbacv3.RBAC_LOG} {
		for _, ap := range policies[action] {
			d.AuthorizationPolicies = append(d.AuthorizationPolicies, PolicyRef{
				ObjectRef: ObjectRef{"AuthorizationPolicy", ap.Namespace, ap.Name},
				Action:    ap.Spec.GetAction().String(),
			})
		}
	}
	d.Inbound.MTLS = inboundMTLSMode(snap, proxy, nil).String()
	// What the proxy listens on: virtualInbound's workload ports when captured, else only
	// the Sidecar's ingress listeners.
	var served []model.ServiceEndpoint
	if capturedSidecar(proxy) {
		served = snap.ServedEndpoints(proxy)
	} else if sc := snap.SidecarFor(proxy); sc != nil {
		for _, in := range sc.Spec.GetIngress() {
			n := in.GetPort().GetNumber()
			d.Inbound.Ports = append(d.Inbound.Ports, InboundPort{
				Service: "Sidecar ingress " + in.GetDefaultEndpoint(), Port: n, TargetPort: n,
				MTLS: inboundMTLSMode(snap, proxy, &n).String(),
			})
		}
	}
	d.describeExposure(snap, served)
	for _, se := range served {
		for _, port := range se.Service.Ports {
			target := se.Endpoint.PortFor(port)
			d.Inbound.Ports = append(d.Inbound.Ports, InboundPort{
				Service: se.Service.Hostname, Port: port.Number, TargetPort: target,
				MTLS: inboundMTLSMode(snap, proxy, &target).String(),
			})
		}
	}
	if proxy.Type == model.SidecarProxy {
		autoMTLS := snap.MayHoldIdentity(proxy)
		for _, svc := range snap.ServicesFor(proxy) {
			out := OutboundDescribed{Host: svc.Hostname}
			if vs := snap.VirtualServiceFor(svc.Hostname, proxy.Namespace, model.MeshGateway); vs != nil {
				out.VirtualService = &ObjectRef{"VirtualService", vs.Namespace, vs.Name}
			}
			dr := snap.DestinationRuleFor(svc.Hostname, proxy.Namespace)
			if dr != nil {
				out.DestinationRule = &ObjectRef{"DestinationRule", dr.Namespace, dr.Name}
			}
			out.MTLS = outboundMTLS(snap, svc, dr, autoMTLS)
			d.Outbound = append(d.Outbound, out)
		}
	}
	return d
}

// describeGateways fills the Gateways that select a gateway proxy and the VirtualServices
// bound to them.
func (d *Description) describeGateways(snap *model.Snapshot, proxy *model.Proxy) {
	names := map[string]bool{}
	for _, gw := range selectedGateways(snap, proxy) {
		d.Gateways = append(d.Gateways, ObjectRef{"Gateway", gw.Namespace, gw.Name})
		names[gw.Namespace+"/"+gw.Name] = true
	}
	for _, vs := range snap.Config.VirtualServices {
		for _, ref := range vs.Spec.Gateways {
			if names[model.ResolveGatewayName(ref, vs.Namespace)] {
				d.GatewayVirtualServices = append(d.GatewayVirtualServices, ObjectRef{"VirtualService", vs.Namespace, vs.Name})
				break
			}
		}
	}
}

// describeExposure fills ExposedBy: the VirtualServices bound to Gateways that send traffic
// to one of the served services, each followed by its Gateways.
func (d *Description) describeExposure(snap *model.Snapshot, served []model.ServiceEndpoint) {
	hosts := map[string]bool{}
	for _, se := range served {
		hosts[se.Service.Hostname] = true
	}
	if len(hosts) == 0 || snap.Config == nil {
		return
	}
	for _, vs := range snap.Config.VirtualServices {
		var gateways []ObjectRef
		for _, ref := range vs.Spec.Gateways {
			if gw := model.ResolveGatewayName(ref, vs.Namespace); gw != model.MeshGateway {
				ns, name, _ := strings.Cut(gw, "/")
				gateways = append(gateways, ObjectRef{"Gateway", ns, name})
			}
		}
		if len(gateways) == 0 || !routesTo(vs, hosts) {
			continue
		}
		d.ExposedBy = append(d.ExposedBy, ObjectRef{"VirtualService", vs.Namespace, vs.Name})
		d.ExposedBy = append(d.ExposedBy, gateways...)
	}
}

// routesTo reports whether a VirtualService has a destination among hosts.
func routesTo(vs *networkingv1.VirtualService, hosts map[string]bool) bool {
	var dests []*networking.Destination
	for _, h := range vs.Spec.Http {
		for _, r := range h.GetRoute() {
			dests = append(dests, r.GetDestination())
		}
	}
	for _, t := range vs.Spec.Tcp {
		for _, r := range t.GetRoute() {
			dests = append(dests, r.GetDestination())
		}
	}
	for _, t := range vs.Spec.Tls {
		for _, r := range t.GetRoute() {
			dests = append(dests, r.GetDestination())
		}
	}
	for _, dest := range dests {
		if hosts[model.ResolveHost(dest.GetHost(), vs.Namespace)] {
			return true
		}
	}
	return false
}

// peerAuthenticationsFor lists the PeerAuthentications mtlsMode composes for the proxy: the
// mesh-wide, namespace-wide and workload ones, the first of each level.
func peerAuthenticationsFor(snap *model.Snapshot, proxy *model.Proxy) []ObjectRef {
	var mesh, namespace, workload *ObjectRef
	for _, pa := range snap.Config.PeerAuthentications {
		selector := pa.Spec.GetSelector().GetMatchLabels()
		ref := &ObjectRef{"PeerAuthentication", pa.Namespace, pa.Name}
		switch {
		case len(selector) == 0 && pa.Namespace == model.RootNamespace:
			if mesh == nil {
				mesh = ref
			}
		case len(selector) == 0 && pa.Namespace == proxy.Namespace:
			if namespace == nil {
				namespace = ref
			}
		case len(selector) > 0 && pa.Namespace == proxy.Namespace && selects(selector, proxy.Labels):
			if workload == nil {
				workload = ref
			}
		}
	}
	var out []ObjectRef
	for _, ref := range []*ObjectRef{mesh, namespace, workload} {
		if ref != nil {
			out = append(out, *ref)
		}
	}
	return out
}

// outboundMTLS is the TLS a sidecar originates to svc, as applyMeshTLS and applyUpstreamTLS
// decide it for the service's default subset.
func outboundMTLS(snap *model.Snapshot, svc *model.Service, dr *networkingv1.DestinationRule, autoMTLS bool) string {
	if dr != nil {
		if tls := dr.Spec.GetTrafficPolicy().GetTls(); tls != nil {
			return tls.GetMode().String()
		}
	}
	if autoMTLS && svc.Resolution != networking.ServiceEntry_NONE && hasMTLSEndpoints(snap, svc) {
		return networking.ClientTLSSettings_ISTIO_MUTUAL.String() + " (auto)"
	}
	return networking.ClientTLSSettings_DISABLE.String() + " (auto)"
}
