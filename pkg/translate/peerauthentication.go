package translate

import (
	security "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// PeerAuthentication → the mTLS mode of a workload's inbound port, as istiod composes it
// (pilot/pkg/security/authn, ComposePeerAuthentication): the mesh-wide policy (root namespace,
// no selector), then the namespace-wide one, then a workload policy whose selector matches the
// proxy's labels, each overriding the one before unless its mode is UNSET; the workload
// policy's portLevelMtls then overrides per port (an UNSET entry takes the workload's mode).
// Whatever is still unset is PERMISSIVE. When several policies compete at one level, istiod
// takes the oldest; Skiff has no creation times and takes the first in configuration order.

// inboundMTLSMode is the effective mode for the proxy's workload on port. It is UNSET only when
// no PeerAuthentication applies at all, where Skiff departs from istiod: istiod's implicit
// PERMISSIVE adds an mTLS chain that waits for the workload certificate, and a Skiff proxy
// without an identity (no WorkloadEntry) never gets one, so Envoy would hold the listener
// warming (for initial_fetch_timeout, 15s) on every push. Without any policy the listener stays
// plaintext, as before mTLS existed; one mesh-wide PERMISSIVE policy gives istiod's default.
func inboundMTLSMode(snap *model.Snapshot, proxy *model.Proxy, port uint32) security.PeerAuthentication_MutualTLS_Mode {
	return mtlsMode(snap, proxy.Namespace, proxy.Labels, &port)
}

// acceptsMeshMTLS reports whether auto-mTLS may send mTLS to an endpoint of svc: it declares a
// sidecar (label security.istio.io/tlsMode: istio) whose listeners, by the policies that
// select its labels, terminate mTLS (STRICT or PERMISSIVE). Like istiod's
// BestEffortInferServiceMTLSMode it leaves portLevelMtls out: the port an endpoint is called on
// need not be the application's port the policy names.
func acceptsMeshMTLS(snap *model.Snapshot, svc *model.Service, ep *model.Endpoint) bool {
	if ep.Labels[tlsModeLabel] != tlsModeIstio {
		return false
	}
	switch mtlsMode(snap, svc.Namespace, ep.Labels, nil) {
	case security.PeerAuthentication_MutualTLS_STRICT, security.PeerAuthentication_MutualTLS_PERMISSIVE:
		return true
	}
	return false
}

// mtlsMode composes the policies for a workload of namespace ns with labels; port, when not
// nil, is the application port portLevelMtls may name.
func mtlsMode(snap *model.Snapshot, ns string, labels map[string]string, port *uint32) security.PeerAuthentication_MutualTLS_Mode {
	mode := security.PeerAuthentication_MutualTLS_UNSET
	if snap == nil || snap.Config == nil {
		return mode
	}
	var mesh, namespace, workload *securityv1.PeerAuthentication
	for _, pa := range snap.Config.PeerAuthentications {
		selector := pa.Spec.GetSelector().GetMatchLabels()
		switch {
		case len(selector) == 0 && pa.Namespace == model.RootNamespace:
			if mesh == nil {
				mesh = pa
			}
		case len(selector) == 0 && pa.Namespace == ns:
			if namespace == nil {
				namespace = pa
			}
		case len(selector) > 0 && pa.Namespace == ns && selects(selector, labels):
			if workload == nil {
				workload = pa
			}
		}
	}
	if mesh == nil && namespace == nil && workload == nil {
		return mode
	}
	for _, pa := range []*securityv1.PeerAuthentication{mesh, namespace, workload} {
		if pa == nil {
			continue
		}
		if m := pa.Spec.GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			mode = m
		}
	}
	// portLevelMtls counts only on selector policies: istiod ignores it on namespace- and
	// mesh-wide ones, which name no workload whose ports it could mean.
	if workload != nil && port != nil {
		if pm, ok := workload.Spec.GetPortLevelMtls()[*port]; ok && pm.GetMode() != security.PeerAuthentication_MutualTLS_UNSET {
			mode = pm.GetMode()
		}
	}
	if mode == security.PeerAuthentication_MutualTLS_UNSET {
		mode = security.PeerAuthentication_MutualTLS_PERMISSIVE
	}
	return mode
}
