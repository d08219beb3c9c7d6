package model

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// Fields pilot accepts (they pass Istio's schema and pilot's validation, so a configuration
// written for istiod loads) but does not translate, each reported as SKF0001 with what happens
// instead. The list follows pkg/translate: when translation learns a field, its check here
// goes.
//
//   - VirtualService: http delegate (the rule is left out); fault exponentialDelay and
//     http2Error, and grpcStatus names that are no gRPC status (that half of the fault is left
//     out; istiod's validation rejects the whole VirtualService for them); matches on JWT
//     claims (`@request.auth.claims…` headers), which need RequestAuthentication.
//   - DestinationRule: tunnel, proxyProtocol, retryBudget, loadBalancer localityLbSetting,
//     zoneAwareLbSetting and backendUtilization, connectionPool http.http2KeepAlive.
//   - AuthorizationPolicy: action CUSTOM (no external authorizer), targetRef(s) (Gateway API
//     gateways and waypoints, which Skiff does not run), trustDomains, and request principals
//     and request.auth.* conditions, which need RequestAuthentication.
//   - Gateway: ecdhCurves and insecureSkipVerify of servers terminating TLS with their own
//     certificates.
//   - Sidecar: ingress tls and connectionPool, inboundConnectionPool,
//     outboundTrafficPolicy.egressProxy. (captureMode is not reported: a listener follows the
//     proxy's interception mode, which is what captureMode says whenever the two agree, and
//     only the connecting proxy knows its mode.)

// jwtClaimHeaderPrefix starts a VirtualService header match that istiod turns into a match on
// JWT claims.
const jwtClaimHeaderPrefix = "@request.auth.claims"

// grpcStatusNames are the gRPC status names a fault abort may use (translate/fault.go).
var grpcStatusNames = map[string]bool{
	"OK": true, "CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true, "DEADLINE_EXCEEDED": true,
	"NOT_FOUND": true, "ALREADY_EXISTS": true, "PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true,
	"FAILED_PRECONDITION": true, "ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true,
	"INTERNAL": true, "UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

// notServed collects the warnings of one object.
type notServed struct {
	kind, namespace, name string
	out                   []Warning
}

func (n *notServed) add(field, format string, args ...any) {
	n.out = append(n.out, Warning{Code: CodeNotServed, Kind: n.kind, Namespace: n.namespace, Name: n.name,
		Field: field, Message: fmt.Sprintf(format, args...)})
}

// notServedWarnings reports every field of the snapshot's objects that pilot does not serve.
func (s *Snapshot) notServedWarnings() []Warning {
	if s.Config == nil {
		return nil
	}
	var out []Warning
	for _, vs := range s.Config.VirtualServices {
		out = append(out, virtualServiceNotServed(vs)...)
	}
	for _, dr := range s.Config.DestinationRules {
		out = append(out, destinationRuleNotServed(dr)...)
	}
	for _, ap := range s.Config.AuthorizationPolicies {
		out = append(out, authorizationPolicyNotServed(ap)...)
	}
	for _, gw := range s.Config.Gateways {
		out = append(out, gatewayTLSNotServed(gw)...)
	}
	for _, sc := range s.Config.Sidecars {
		out = append(out, sidecarNotServed(sc)...)
	}
	return out
}

func sidecarNotServed(sc *networkingv1.Sidecar) []Warning {
	n := &notServed{kind: "Sidecar", namespace: sc.Namespace, name: sc.Name}
	for i, in := range sc.Spec.GetIngress() {
		f := fmt.Sprintf("spec.ingress[%d]", i)
		if in.GetTls() != nil {
			n.add(f+".tls", "TLS termination on Sidecar ingress listeners is not supported by Skiff: the listener serves plaintext (or the mesh's mTLS, by PeerAuthentication)")
		}
		if in.GetConnectionPool() != nil {
			n.add(f+".connectionPool", "connection pools on Sidecar ingress listeners are not supported by Skiff: Envoy's defaults apply")
		}
	}
	if sc.Spec.GetInboundConnectionPool() != nil {
		n.add("spec.inboundConnectionPool", "inbound connection pools are not supported by Skiff: Envoy's defaults apply")
	}
	if sc.Spec.GetOutboundTrafficPolicy().GetEgressProxy() != nil {
		n.add("spec.outboundTrafficPolicy.egressProxy", "egressProxy is not supported by Skiff: traffic to unknown hosts follows the outboundTrafficPolicy mode")
	}
	return n.out
}

func virtualServiceNotServed(vs *networkingv1.VirtualService) []Warning {
	n := &notServed{kind: "VirtualService", namespace: vs.Namespace, name: vs.Name}
	for i, r := range vs.Spec.Http {
		f := fmt.Sprintf("spec.http[%d]", i)
		if r.GetDelegate() != nil {
			n.add(f+".delegate", "delegate VirtualServices are not supported by Skiff: the rule is left out, so its requests go to the next rule that matches them")
		}
		if r.GetFault().GetDelay().GetExponentialDelay() != nil {
			n.add(f+".fault.delay.exponentialDelay", "exponential delays are not supported (istiod rejects them): no delay is injected")
		}
		switch e := r.GetFault().GetAbort().GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			n.add(f+".fault.abort.http2Error", "HTTP/2 error aborts are not supported (istiod rejects them): no abort is injected")
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if !grpcStatusNames[e.GrpcStatus] {
				n.add(f+".fault.abort.grpcStatus", "unknown gRPC status %q (want a name such as UNAVAILABLE; istiod rejects it): no abort is injected", e.GrpcStatus)
			}
		}
		for j, m := range r.Match {
			mf := fmt.Sprintf("%s.match[%d]", f, j)
			for _, name := range sortedKeys(m.GetHeaders()) {
				if strings.HasPrefix(name, jwtClaimHeaderPrefix) {
					n.add(mf+".headers["+name+"]", "matching JWT claims needs RequestAuthentication, which Skiff does not support: no request has claims, so this match never matches and is left out")
				}
			}
			for _, name := range sortedKeys(m.GetWithoutHeaders()) {
				if strings.HasPrefix(name, jwtClaimHeaderPrefix) {
					n.add(mf+".withoutHeaders["+name+"]", "matching JWT claims needs RequestAuthentication, which Skiff does not support: no request has claims, so this condition always holds")
				}
			}
		}
	}
	return n.out
}

func destinationRuleNotServed(dr *networkingv1.DestinationRule) []Warning {
	n := &notServed{kind: "DestinationRule", namespace: dr.Namespace, name: dr.Name}
	n.trafficPolicy("spec.trafficPolicy", dr.Spec.GetTrafficPolicy())
	for i, ss := range dr.Spec.GetSubsets() {
		n.trafficPolicy(fmt.Sprintf("spec.subsets[%d].trafficPolicy", i), ss.GetTrafficPolicy())
	}
	return n.out
}

func (n *notServed) trafficPolicy(f string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	if tp.GetTunnel() != nil {
		n.add(f+".tunnel", "tunnelling is not supported by Skiff: connections go to the destination directly")
	}
	if tp.GetProxyProtocol() != nil {
		n.add(f+".proxyProtocol", "the PROXY protocol is not supported by Skiff: no PROXY header is sent")
	}
	if tp.GetRetryBudget() != nil {
		n.add(f+".retryBudget", "retry budgets are not supported by Skiff: retries are limited only by the circuit breakers' max_retries")
	}
	n.loadBalancer(f+".loadBalancer", tp.GetLoadBalancer())
	n.connectionPool(f+".connectionPool", tp.GetConnectionPool())
	for j, p := range tp.GetPortLevelSettings() {
		pf := fmt.Sprintf("%s.portLevelSettings[%d]", f, j)
		n.loadBalancer(pf+".loadBalancer", p.GetLoadBalancer())
		n.connectionPool(pf+".connectionPool", p.GetConnectionPool())
	}
}

func (n *notServed) loadBalancer(f string, lb *networking.LoadBalancerSettings) {
	if l := lb.GetLocalityLbSetting(); l != nil && (l.GetEnabled() == nil || l.GetEnabled().GetValue()) {
		n.add(f+".localityLbSetting", "locality load balancing is not supported by Skiff: endpoints are picked regardless of locality")
	}
	if lb.GetZoneAwareLbSetting() != nil {
		n.add(f+".zoneAwareLbSetting", "zone-aware load balancing is not supported by Skiff: endpoints are picked regardless of zone")
	}
	if lb.GetBackendUtilization() != nil {
		n.add(f+".backendUtilization", "backend-utilization load balancing is not supported by Skiff: the cluster keeps its other load balancing settings")
	}
}

func (n *notServed) connectionPool(f string, cp *networking.ConnectionPoolSettings) {
	if cp.GetHttp().GetHttp2KeepAlive() != nil {
		n.add(f+".http.http2KeepAlive", "HTTP/2 keepalive pings are not supported by Skiff: none are sent")
	}
}

func authorizationPolicyNotServed(ap *securityv1.AuthorizationPolicy) []Warning {
	n := &notServed{kind: "AuthorizationPolicy", namespace: ap.Namespace, name: ap.Name}
	spec := &ap.Spec
	switch {
	case spec.GetTargetRef() != nil:
		n.add("spec.targetRef", "policies attached by targetRef apply to Gateway API gateways and waypoints, which Skiff does not run: the policy applies to no proxy")
		return n.out
	case len(spec.GetTargetRefs()) > 0:
		n.add("spec.targetRefs", "policies attached by targetRefs apply to Gateway API gateways and waypoints, which Skiff does not run: the policy applies to no proxy")
		return n.out
	case spec.GetAction() == security.AuthorizationPolicy_CUSTOM:
		n.add("spec.action", "CUSTOM delegates to an external authorizer (a mesh config extensionProvider), which Skiff does not configure: the policy is not enforced")
		return n.out
	}
	// What a rule with a field that cannot be enforced becomes depends on the action (see
	// translate/authz_rules.go): an ALLOW rule is left out, a DENY or AUDIT rule loses the field.
	effect := "the rule is enforced without it, so it matches more requests"
	if spec.GetAction() == security.AuthorizationPolicy_ALLOW {
		effect = "the rule is left out, so the policy allows less"
	}
	for i, r := range spec.GetRules() {
		for j, from := range r.GetFrom() {
			src := from.GetSource()
			f := fmt.Sprintf("spec.rules[%d].from[%d].source", i, j)
			if len(src.GetTrustDomains()) > 0 {
				n.add(f+".trustDomains", "trustDomains is not supported by Skiff: %s", effect)
			}
			if len(src.GetNotTrustDomains()) > 0 {
				n.add(f+".notTrustDomains", "notTrustDomains is not supported by Skiff: %s", effect)
			}
			if len(src.GetRequestPrincipals()) > 0 {
				n.add(f+".requestPrincipals", "request principals need RequestAuthentication, which Skiff does not support: no request has a principal, so this never matches")
			}
			if len(src.GetNotRequestPrincipals()) > 0 {
				n.add(f+".notRequestPrincipals", "request principals need RequestAuthentication, which Skiff does not support: no request has a principal, so this always matches")
			}
		}
		for j, c := range r.GetWhen() {
			if strings.HasPrefix(c.GetKey(), "request.auth.") {
				n.add(fmt.Sprintf("spec.rules[%d].when[%d]", i, j), "%s needs RequestAuthentication, which Skiff does not support: no request has one, so values never match and notValues always do", c.GetKey())
			}
		}
	}
	return n.out
}

func gatewayTLSNotServed(gw *networkingv1.Gateway) []Warning {
	n := &notServed{kind: "Gateway", namespace: gw.Namespace, name: gw.Name}
	for i, srv := range gw.Spec.Servers {
		tls := srv.GetTls()
		switch tls.GetMode() {
		case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		default:
			continue
		}
		if ParseProtocol(srv.GetPort().GetProtocol()).IsHTTP() {
			continue // plaintext: the settings only redirect
		}
		f := fmt.Sprintf("spec.servers[%d].tls", i)
		if len(tls.GetEcdhCurves()) > 0 {
			n.add(f+".ecdhCurves", "ecdhCurves is not supported by Skiff: Envoy offers its default curves")
		}
		if tls.GetInsecureSkipVerify().GetValue() && tls.GetMode() != networking.ServerTLSSettings_SIMPLE {
			n.add(f+".insecureSkipVerify", "insecureSkipVerify is not supported by Skiff for %s: client certificates are verified", tls.GetMode())
		}
	}
	return n.out
}
