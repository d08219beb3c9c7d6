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

// inboundMTLSMode is the effective mode for the proxy's workload on port, or for the
// workload as a whole when port is nil (virtualInbound's passthrough chains). With no
// PeerAuthentication at any level it is istiod's implicit PERMISSIVE, except for a proxy that
// can never hold a workload certificate (model.Snapshot.MayHoldIdentity: folder mode without
// a WorkloadEntry for its node ID, or one without a serviceAccount): an mTLS chain would hold
// its listener warming for the `default` secret (initial_fetch_timeout, 15 s) on every push,
// and accept nobody's mTLS after that, so it gets the plaintext chain alone. An explicit
// STRICT or PERMISSIVE is applied as written even then: someone asked for it.
func inboundMTLSMode(snap *model.Snapshot, proxy *model.Proxy, port *uint32) security.PeerAuthentication_MutualTLS_Mode {
	mode := mtlsMode(snap, proxy.Namespace, proxy.Labels, port)
	if mode != security.PeerAuthentication_MutualTLS_UNSET {
		return mode
	}
	if snap.MayHoldIdentity(proxy) {
		return security.PeerAuthentication_MutualTLS_PERMISSIVE
	}
	return security.PeerAuthentication_MutualTLS_DISABLE
}

// acceptsMeshMTLS reports whether auto-mTLS may send mTLS to an endpoint of svc: it declares a
// sidecar (label security.istio.io/tlsMode: istio) whose listeners, by the policies that
// select its labels, terminate mTLS: STRICT, PERMISSIVE, or no policy at all (istiod's implicit
// PERMISSIVE). Like istiod's BestEffortInferServiceMTLSMode it leaves portLevelMtls out: the
// port an endpoint is called on need not be the application's port the policy names. Whether
// the endpoint's own proxy can hold a certificate is not asked, as istiod does not: the label
// is the workload's promise (in folder mode, a WorkloadEntry labelled so without a
// serviceAccount breaks it, see the README).
func acceptsMeshMTLS(snap *model.Snapshot, svc *model.Service, ep *model.Endpoint) bool {
	if ep.Labels[tlsModeLabel] != tlsModeIstio {
		return false
	}
	return mtlsMode(snap, svc.Namespace, ep.Labels, nil) != security.PeerAuthentication_MutualTLS_DISABLE
}

// mtlsMode composes the policies for a workload of namespace ns with labels; port, when not
// nil, is the application port portLevelMtls may name. It is UNSET only when no policy applies
// at all, which each caller reads as istiod's PERMISSIVE in its own way (see inboundMTLSMode).
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
