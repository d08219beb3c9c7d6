package model

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Proxies' labels matter to translation only through selectors: a Sidecar's or
// DestinationRule's workloadSelector, an AuthorizationPolicy's or PeerAuthentication's selector,
// a Gateway's selector, a VirtualService match's sourceLabels, a Telemetry's selector. A label whose key no selector
// names cannot change any proxy's configuration, so the configuration key
// (translate.ConfigKey) leaves it out: two Deployments that differ only in `app` share one
// translation until something selects by `app`. Anything new that reads proxy labels must add
// its keys here.

// selectorLabelKeys collects every label key that some object selects proxies by (all), those
// that objects other than AuthorizationPolicies select by (listeners), and those that objects
// other than AuthorizationPolicies and PeerAuthentications select by (traffic). Policies shape
// only a workload's inbound side (the mTLS mode of its listener chains, the RBAC rules their
// filters fetch), so labels that only policies select by cannot change a proxy's clusters,
// routes or secrets; and AuthorizationPolicies reach listeners only as the names of the rules
// their RBAC filters fetch, the same for every proxy, so labels that only they select by cannot
// change a proxy's listeners either.
func selectorLabelKeys(set *config.Set) (all, traffic map[string]bool) {
	all, traffic = map[string]bool{}, map[string]bool{}
	add := func(into ...map[string]bool) func(map[string]string) {
		return func(labels map[string]string) {
			for k := range labels {
				for _, m := range into {
					m[k] = true
				}
			}
		}
	}
	addTraffic, addPolicy := add(all, traffic), add(all)
	for _, sc := range set.Sidecars {
		addTraffic(sc.Spec.GetWorkloadSelector().GetLabels())
	}
	for _, dr := range set.DestinationRules {
		addTraffic(dr.Spec.GetWorkloadSelector().GetMatchLabels())
	}
	for _, ap := range set.AuthorizationPolicies {
		addPolicy(ap.Spec.GetSelector().GetMatchLabels())
	}
	for _, pa := range set.PeerAuthentications {
		addPolicy(pa.Spec.GetSelector().GetMatchLabels())
	}
	for _, gw := range set.Gateways {
		addTraffic(gw.Spec.GetSelector())
	}
	// Telemetry shapes listeners (access logs, tracing) and clusters (a tracing provider's).
	for _, t := range set.Telemetries {
		addTraffic(t.Spec.GetSelector().GetMatchLabels())
		if t.Spec.GetTargetRef() != nil || len(t.Spec.GetTargetRefs()) > 0 {
			addTraffic(map[string]string{gatewayNameLabel: ""})
		}
	}
	for _, vs := range set.VirtualServices {
		addVirtualServiceSourceLabels(&vs.Spec, addTraffic)
	}
	return all, traffic
}

func addVirtualServiceSourceLabels(vs *networking.VirtualService, add func(map[string]string)) {
	for _, r := range vs.GetHttp() {
		for _, m := range r.GetMatch() {
			add(m.GetSourceLabels())
		}
	}
	for _, r := range vs.GetTcp() {
		for _, m := range r.GetMatch() {
			add(m.GetSourceLabels())
		}
	}
	for _, r := range vs.GetTls() {
		for _, m := range r.GetMatch() {
			add(m.GetSourceLabels())
		}
	}
}

// SelectsByLabel reports whether any object in the snapshot selects proxies by label key.
func (s *Snapshot) SelectsByLabel(key string) bool { return s.selectorKeys[key] }

// SelectsTrafficByLabel reports whether an object other than an AuthorizationPolicy or
// PeerAuthentication selects proxies by label key: whether the label can change a proxy's
// clusters, routes or secrets.
func (s *Snapshot) SelectsTrafficByLabel(key string) bool { return s.trafficSelectorKeys[key] }
