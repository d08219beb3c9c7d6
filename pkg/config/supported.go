package config

import "k8s.io/apimachinery/pkg/runtime/schema"

// Supports reports whether Parse reads objects of this apiVersion and kind: one of the Istio
// kinds and versions this package validates, or one of the Kubernetes kinds a Set holds. The
// validation webhook (cmd/sidecar-injector) uses it to tell an object it must judge from one
// of a kind pilot never reads (an EnvoyFilter, say), which it lets through.
func Supports(apiVersion, kind string) bool {
	if _, err := lookupKind(apiVersion, kind); err == nil {
		return true
	}
	_, ok := kubeKinds[schema.FromAPIVersionAndKind(apiVersion, kind)]
	return ok
}
