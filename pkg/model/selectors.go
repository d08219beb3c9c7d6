package model

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Proxies' labels matter to translation only through selectors: a Sidecar's or
// DestinationRule's workloadSelector, an AuthorizationPolicy's or PeerAuthentication's selector,
// a Gateway's selector, a VirtualService match's sourceLabels. A label whose key no selector
// names cannot change any proxy's configuration, so the configuration key
// (translate.ConfigKey) leaves it out: two Deployments that differ only in `app` share one
// translation until something selects by `app`. Anything new that reads proxy labels must add
// its keys here.

// selectorLabelKeys collects every label key that some object selects proxies by.
func selectorLabelKeys(set *config.Set) map[string]bool {
	keys := map[string]bool{}
	add := func(labels map[string]string) {
		for k := range labels {
			keys[k] = true
		}
	}
	for _, sc := range set.Sidecars {
		add(sc.Spec.GetWorkloadSelector().GetLabels())
	}
	for _, dr := range set.DestinationRules {
		add(dr.Spec.GetWorkloadSelector().GetMatchLabels())
	}
	for _, ap := range set.AuthorizationPolicies {
		add(ap.Spec.GetSelector().GetMatchLabels())
	}
	for _, pa := range set.PeerAuthentications {
		add(pa.Spec.GetSelector().GetMatchLabels())
	}
	for _, gw := range set.Gateways {
		add(gw.Spec.GetSelector())
	}
	for _, vs := range set.VirtualServices {
		addVirtualServiceSourceLabels(&vs.Spec, add)
	}
	return keys
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
