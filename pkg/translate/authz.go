package translate

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"
	security "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// AuthorizationPolicy → Envoy RBAC filters, as istiod builds them for a workload's inbound
// traffic (pilot/pkg/security/authz/builder): which policies apply here, one RBAC filter per
// action; authz_rules.go turns each rule into an RBAC policy and authz_match.go builds the
// matchers. Unlike istiod, the filters' configurations are not inside the listener: they are
// extension configurations the filters fetch over ADS (authz_ecds.go), so that a policy
// change reaches the next request on connections already open.

// rbacTCPStatPrefix is istiod's stat prefix of the network RBAC filter (tcp.rbac.allowed,
// tcp.rbac.denied). The HTTP filter has none: its stats already live under the connection
// manager's prefix (http.inbound_...rbac.allowed).
const rbacTCPStatPrefix = "tcp."

// rbacActions are the RBAC filters of an inbound chain, in istiod's order: AUDIT (an RBAC LOG
// filter, which marks requests for access logs and never denies), DENY, then ALLOW. A request
// is denied if any DENY policy matches it; then, if any ALLOW policy applies to the workload,
// it must match one of them, so what no ALLOW rule allows is denied. CUSTOM policies delegate
// to an external authorizer (ext_authz) that Skiff does not configure, so they have no filter;
// istiod would put theirs before DENY.
var rbacActions = []struct {
	action rbacv3.RBAC_Action
	name   string // how the filter's extension configuration is named, see authz_ecds.go
}{
	{rbacv3.RBAC_LOG, "audit"},
	{rbacv3.RBAC_DENY, "deny"},
	{rbacv3.RBAC_ALLOW, "allow"},
}

// AuthorizationExtensionConfigs builds the RBAC filter configurations enforcing the
// AuthorizationPolicies that apply to the proxy's workload, as the extension configurations
// its inbound chains' RBAC filters fetch (authz_ecds.go): for each action, one for the HTTP
// filter ahead of the router of its inbound HTTP ports and one for the network filter ahead of
// tcp_proxy on its inbound TCP ports. An action no policy applies with has a configuration
// without rules, which Envoy's RBAC filters read as "enforce nothing": the filters are always
// there, so the first policy, or the last one removed, changes these and not the listeners.
func AuthorizationExtensionConfigs(snap *model.Snapshot, proxy *model.Proxy) []*corev3.TypedExtensionConfig {
	byAction := authorizationPoliciesFor(snap, proxy)
	var packer rbacPacker // packs as MustAny does, see authz_pack.go
	out := make([]*corev3.TypedExtensionConfig, 0, 2*len(rbacActions))
	var tcp []*corev3.TypedExtensionConfig
	for _, a := range rbacActions {
		httpConfig, tcpConfig := &rbachttpv3.RBAC{}, &rbacnetworkv3.RBAC{StatPrefix: rbacTCPStatPrefix}
		var httpAny, tcpAny *anypb.Any
		if policies := byAction[a.action]; len(policies) > 0 {
			httpRules, tcpRules := rbacRules(policies, a.action)
			httpAny, tcpAny = packer.pack(httpConfig, httpRules), packer.pack(tcpConfig, tcpRules)
		} else {
			httpAny, tcpAny = MustAny(httpConfig), MustAny(tcpConfig)
		}
		out = append(out, &corev3.TypedExtensionConfig{Name: rbacHTTPFilterName(a.name), TypedConfig: httpAny})
		tcp = append(tcp, &corev3.TypedExtensionConfig{Name: rbacTCPFilterName(a.name), TypedConfig: tcpAny})
	}
	return append(out, tcp...)
}

// authorizationPoliciesFor lists the policies that apply to the proxy's workload by RBAC
// action: those of the root namespace, then those of its own namespace, each in configuration
// order, whose selector's matchLabels are a subset of the proxy's labels (no selector: every
// workload of that namespace, and of every namespace for the root's).
//
// Policies with targetRef or targetRefs are not for sidecars: they attach to Gateway API
// gateways and waypoints, which Skiff does not run, and istiod ignores them for any other
// workload (rather than applying them namespace-wide).
func authorizationPoliciesFor(snap *model.Snapshot, proxy *model.Proxy) map[rbacv3.RBAC_Action][]*securityv1.AuthorizationPolicy {
	if snap == nil || snap.Config == nil {
		return nil
	}
	namespaces := []string{model.RootNamespace}
	if proxy.Namespace != model.RootNamespace {
		namespaces = append(namespaces, proxy.Namespace)
	}
	out := map[rbacv3.RBAC_Action][]*securityv1.AuthorizationPolicy{}
	for _, ns := range namespaces {
		for _, ap := range snap.Config.AuthorizationPolicies {
			spec := &ap.Spec
			if ap.Namespace != ns || spec.GetTargetRef() != nil || len(spec.GetTargetRefs()) > 0 ||
				!selects(spec.GetSelector().GetMatchLabels(), proxy.Labels) {
				continue
			}
			switch spec.GetAction() {
			case security.AuthorizationPolicy_ALLOW:
				out[rbacv3.RBAC_ALLOW] = append(out[rbacv3.RBAC_ALLOW], ap)
			case security.AuthorizationPolicy_DENY:
				out[rbacv3.RBAC_DENY] = append(out[rbacv3.RBAC_DENY], ap)
			case security.AuthorizationPolicy_AUDIT:
				out[rbacv3.RBAC_LOG] = append(out[rbacv3.RBAC_LOG], ap)
			case security.AuthorizationPolicy_CUSTOM:
				// Needs an ext_authz provider from mesh config, which Skiff does not have.
			}
		}
	}
	return out
}

// selects reports whether every selector label is among the workload's labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// rbacRules compiles the policies of one action into the RBAC configurations of the HTTP and
// of the network filter, an Envoy policy per rule, named as istiod names them so stats, logs
// and dumps lead back to the YAML. A rule that cannot be enforced as written here (see
// authz_rules.go) is left out of an ALLOW configuration, which then allows less; for DENY and
// AUDIT only the offending fields are. Both are compiled in one pass, which shares what does
// not depend on the filter (see rulePolicies).
//
// Rules that say the same thing in the same namespace compile to the same policies, which are
// then shared (and packed once, see rbacPacker): policies stamped from one template, as in
// istiod's own benchmark, commonly repeat their rules. The key is the rule's deterministic
// encoding, much cheaper than compiling and packing it again.
func rbacRules(policies []*securityv1.AuthorizationPolicy, action rbacv3.RBAC_Action) (forHTTP, forTCP *rbacv3.RBAC) {
	type compiled struct{ forHTTP, forTCP *rbacv3.Policy }
	var seen map[string]compiled
	var key []byte
	size := 0
	for _, ap := range policies {
		size += max(1, len(ap.Spec.GetRules()))
	}
	forHTTP = &rbacv3.RBAC{Action: action, Policies: make(map[string]*rbacv3.Policy, size)}
	forTCP = &rbacv3.RBAC{Action: action, Policies: make(map[string]*rbacv3.Policy, size)}
	for _, ap := range policies {
		rules := ap.Spec.GetRules()
		if len(rules) == 0 {
			// `rules` unset matches nothing (so an ALLOW policy without rules denies
			// everything it applies to), unlike `rules: [{}]`, which matches everything.
			name := rbacPolicyName(ap.Namespace, ap.Name, 0)
			forHTTP.Policies[name] = matchNeverPolicy()
			forTCP.Policies[name] = forHTTP.Policies[name]
			continue
		}
		c := ruleContext{action: action, policyNamespace: ap.Namespace}
		for i, r := range rules {
			if r == nil {
				continue // validation rejects null rules
			}
			var httpPolicy, tcpPolicy *rbacv3.Policy
			var err error
			key, err = deterministic.MarshalAppend(append(append(key[:0], ap.Namespace...), 0), r)
			if p, ok := seen[string(key)]; ok && err == nil {
				httpPolicy, tcpPolicy = p.forHTTP, p.forTCP
			} else {
				httpPolicy, tcpPolicy = rulePolicies(c, r)
				if err == nil {
					if seen == nil {
						seen = map[string]compiled{}
					}
					seen[string(key)] = compiled{httpPolicy, tcpPolicy}
				}
			}
			if httpPolicy == nil && tcpPolicy == nil {
				continue
			}
			name := rbacPolicyName(ap.Namespace, ap.Name, i)
			if httpPolicy != nil {
				forHTTP.Policies[name] = httpPolicy
			}
			if tcpPolicy != nil {
				forTCP.Policies[name] = tcpPolicy
			}
		}
	}
	return forHTTP, forTCP
}

// rbacPolicyName is istiod's `ns[NAMESPACE]-policy[NAME]-rule[INDEX]`.
func rbacPolicyName(namespace, name string, rule int) string {
	return "ns[" + namespace + "]-policy[" + name + "]-rule[" + strconv.Itoa(rule) + "]"
}
