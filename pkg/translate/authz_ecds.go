package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Inbound RBAC through extension config discovery (ECDS). istiod writes the RBAC filters'
// rules into the listener, so a policy change replaces the listener's filter chains and the
// connections already open keep the old chains, without the new rules, until Envoy's drain
// time ends (600 s by default): a DENY written against a pooled client took effect after
// minutes. Here every inbound chain of a sidecar carries the same RBAC filters whatever the
// policies, and each filter fetches its configuration by name over ADS
// (type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig). A policy change sends new
// extension configurations and not one listener byte changes; Envoy swaps a discovered HTTP
// filter's configuration in place, and builds a connection's HTTP filters for each request,
// so the next request on a connection already open is judged by the new policy.
//
// The network RBAC filter of TCP chains is discovered the same way (Envoy 1.40 implements
// config_discovery for listener network filters; test/e2e's TestPolicyLiveTCP), so the next
// TCP connection gets new rules at once. A TCP connection already open would keep the rules it
// was accepted under (Envoy builds a connection's network filters once): see tcpRulesMark for
// how such connections are closed.
//
// The names say where and what each is: `inbound.rbac.http.deny` is the DENY filter of the
// inbound HTTP connection managers. One configuration serves every inbound port of the
// workload, as istiod's one filter per action does: rules that name ports carry their own
// destination_port conditions, and a configuration per port would repeat the same bytes.
//
// Fail closed. The listener warms until every configuration it names has arrived
// (apply_default_config_without_warming false), and if one never arrives (Envoy gives up
// after the initial fetch timeout, 15 s) or is removed, the filter falls back to its
// default_config: DENY and ALLOW deny every request or connection, AUDIT logs nothing. A
// workload is never served without its policies.

// rbacDiscoveryPrefix starts the names of the inbound RBAC extension configurations.
const rbacDiscoveryPrefix = "inbound.rbac."

// rbacHTTPFilterName is the HTTP RBAC filter of an action (audit, deny, allow), and the name
// of the extension configuration it fetches.
func rbacHTTPFilterName(action string) string { return rbacDiscoveryPrefix + "http." + action }

// rbacTCPFilterName is the network RBAC filter of an action, and the name of its extension
// configuration.
func rbacTCPFilterName(action string) string { return rbacDiscoveryPrefix + "tcp." + action }

// RBAC filters' type URLs, the only type each discovered filter accepts.
var (
	rbacHTTPTypeURL    = "type.googleapis.com/" + string(proto.MessageName(&rbachttpv3.RBAC{}))
	rbacNetworkTypeURL = "type.googleapis.com/" + string(proto.MessageName(&rbacnetworkv3.RBAC{}))
)

// The RBAC filters of inbound chains, the same for every proxy and every chain (generated
// protos are never modified after construction, so they are shared): they name their
// configurations, which AuthorizationExtensionConfigs builds.
var (
	inboundRBACHTTPFilters    = rbacHTTPFilters()
	inboundRBACNetworkFilters = rbacNetworkFilters()
)

func rbacHTTPFilters() []*hcmv3.HttpFilter {
	out := make([]*hcmv3.HttpFilter, 0, len(rbacActions))
	for _, a := range rbacActions {
		out = append(out, &hcmv3.HttpFilter{
			Name: rbacHTTPFilterName(a.name),
			ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: rbacDiscovery(rbacHTTPTypeURL,
				&rbachttpv3.RBAC{Rules: failClosedRules(a.action)})},
		})
	}
	return out
}

func rbacNetworkFilters() []*listenerv3.Filter {
	out := make([]*listenerv3.Filter, 0, len(rbacActions))
	for _, a := range rbacActions {
		out = append(out, &listenerv3.Filter{
			Name: rbacTCPFilterName(a.name),
			ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: rbacDiscovery(rbacNetworkTypeURL,
				&rbacnetworkv3.RBAC{StatPrefix: rbacTCPStatPrefix, Rules: failClosedRules(a.action)})},
		})
	}
	return out
}

// rbacDiscovery fetches a filter's configuration over ADS, holding the listener warming until
// it arrives; defaultConfig is what the filter enforces if it never does.
func rbacDiscovery(typeURL string, defaultConfig proto.Message) *corev3.ExtensionConfigSource {
	return &corev3.ExtensionConfigSource{
		ConfigSource:                     ADSConfigSource(),
		DefaultConfig:                    MustAny(defaultConfig),
		ApplyDefaultConfigWithoutWarming: false,
		TypeUrls:                         []string{typeURL},
	}
}

// failClosedRules are the rules an action's filter enforces without its configuration: DENY
// matches everything, ALLOW allows nothing (no policy), so either denies every request; AUDIT
// never denies anything, and logs nothing (no rules).
func failClosedRules(action rbacv3.RBAC_Action) *rbacv3.RBAC {
	switch action {
	case rbacv3.RBAC_DENY:
		return &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
			"skiff-fail-closed": {
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
			},
		}}
	case rbacv3.RBAC_ALLOW:
		return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
	}
	return nil
}

// TCP connections already open. Envoy builds a connection's network filters once, so a TCP
// connection accepted before a policy change would keep the rules it was accepted under for as
// long as it lives. So the inbound chains that end in tcp_proxy carry a mark of the workload's
// network RBAC rules (filter chain metadata `skiff.rbac` `tcp_rules`, a hash of the policies
// they come from): when those rules change, so do these chains, and Envoy drains them, closing their
// connections by the end of the drain time (45 s with pilot's drain flags), as istiod's
// listener update would; new connections get the new rules at once, over ECDS. The HTTP
// chains carry no mark: their connections follow a change from the next request on. A
// workload no policy applies to has unmarked chains, so its listeners are the same as any
// other's.

// tcpRulesMarkKey is the filter metadata namespace of the mark.
const tcpRulesMarkKey = "skiff.rbac"

// tcpRulesMark is the metadata marking the proxy's TCP chains, nil when no policy applies. It
// hashes the applicable policies (action, name, spec) rather than the rules built from them:
// the rules follow from the policies alone, and hashing a few small specs costs far less than
// building the rules a second time. An edit of a policy's HTTP-only fields, which leaves its
// TCP rules alone, thus drains TCP connections too: stricter than needed, never looser.
func tcpRulesMark(snap *model.Snapshot, proxy *model.Proxy) *corev3.Metadata {
	byAction := authorizationPoliciesFor(snap, proxy)
	if len(byAction) == 0 {
		return nil
	}
	h := sha256.New()
	for _, a := range rbacActions {
		for _, ap := range byAction[a.action] {
			spec, err := proto.MarshalOptions{Deterministic: true}.Marshal(&ap.Spec)
			if err != nil {
				panic(fmt.Sprintf("translate: encoding AuthorizationPolicy %s/%s: %v", ap.Namespace, ap.Name, err)) // a decoded spec always encodes
			}
			fmt.Fprintf(h, "%s\x00%s/%s\x00%d\x00", a.name, ap.Namespace, ap.Name, len(spec))
			h.Write(spec)
		}
	}
	mark, err := structpb.NewStruct(map[string]any{"tcp_rules": hex.EncodeToString(h.Sum(nil)[:8])})
	if err != nil {
		panic(fmt.Sprintf("translate: building the TCP rules mark: %v", err)) // a string value always converts
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{tcpRulesMarkKey: mark}}
}

// markTCPChains sets mark on every chain of the listeners (built for this call, never shared)
// that enforces the network RBAC rules.
func markTCPChains(listeners []*listenerv3.Listener, mark *corev3.Metadata) {
	if mark == nil {
		return
	}
	for _, l := range listeners {
		for _, c := range l.GetFilterChains() {
			if len(c.GetFilters()) > 0 && c.GetFilters()[0].GetName() == inboundRBACNetworkFilters[0].GetName() {
				c.Metadata = mark
			}
		}
	}
}
