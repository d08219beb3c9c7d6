package translate

import (
	"strconv"
	"strings"

	"github.com/skiffmesh/skiff/pkg/model"
)

// ConfigKey names the configuration class of a proxy in snap: proxies with equal keys get
// identical listeners, routes, clusters, extension configurations and gateway secrets from
// ForProxy and Secrets, so pilot
// translates, diffs and marshals once per key, however many proxies share it. It is made of
// exactly the inputs translation reads from a proxy, resolved against the snapshot:
//
//   - type, namespace and interception mode;
//   - the labels that select Gateways, Sidecars and policies: those of the Pod or
//     WorkloadEntry the node ID names (Snapshot.ResolveProxy), else the node's, and of those
//     only the keys some selector in the snapshot names (Snapshot.SelectsByLabel): other
//     labels cannot change the output;
//   - for a captured sidecar, the application ports its workload serves (virtualInbound's
//     chains and inbound clusters), found from the endpoints the named workload backs, or,
//     when it names none, from those at its IP (InboundPortsFollowAddresses), and its Pod's
//     application probes (model.AppProbes.Key: their content, equal for replicas);
//   - without capture, the proxy's IP, which Sidecar ingress listeners bind;
//   - when the proxy reports spans, its tracing identity (telemetry.go): the span service name
//     and Istio's canonical service tags, from its app and version labels;
//   - whether the proxy may hold a workload certificate (Snapshot.MayHoldIdentity): without
//     one it gets no default mTLS, inbound (PERMISSIVE chains) or outbound (auto-mTLS), and a
//     gateway serves no ISTIO_MUTUAL servers.
//
// The pod name is not part of it, so the replicas of a Deployment share one class, and so do
// Deployments of one namespace that no selector tells apart. A key
// changes when any of these inputs does (a Pod relabelled, a Service selecting the workload
// on a new port), and the proxy then belongs to another class. Any new input translation
// reads from a proxy must be added here, or proxies that differ in it would share config.
func ConfigKey(snap *model.Snapshot, proxy *model.Proxy) string {
	return ConfigKeys(snap, proxy).Full
}

// TrafficConfigKey is ConfigKey without the labels that only AuthorizationPolicies and
// PeerAuthentications select by (model.Snapshot.SelectsTrafficByLabel). Policies shape only
// the inbound side (listeners' mTLS mode, ExtensionConfigs' RBAC rules), so Clusters, Routes
// and Secrets give identical resources for proxies with equal traffic keys: workloads told
// apart only by their policies share those, and differ in their listeners and RBAC rules
// alone.
func TrafficConfigKey(snap *model.Snapshot, proxy *model.Proxy) string {
	return ConfigKeys(snap, proxy).Traffic
}

// Keys are a proxy's configuration keys: ConfigKey and TrafficConfigKey.
type Keys struct {
	Full, Traffic string
}

// ConfigKeys is every key of the proxy at once: the proxy is resolved and its inbound ports
// found once, as a push does for every proxy class.
func ConfigKeys(snap *model.Snapshot, proxy *model.Proxy) Keys {
	proxy = snap.ResolveProxy(proxy)
	var b strings.Builder
	b.WriteString(string(proxy.Type))
	b.WriteByte('/')
	b.WriteString(proxy.Namespace)
	b.WriteByte('/')
	b.WriteString(string(proxy.InterceptionMode))
	if proxy.InterceptionMode == model.InterceptionNone {
		b.WriteString("/ip=")
		b.WriteString(proxy.IP.String())
	}
	if !snap.MayHoldIdentity(proxy) {
		b.WriteString("/no-identity")
	}
	if capturedSidecar(proxy) {
		b.WriteString("/ports=")
		for i, p := range workloadInboundPorts(snap, proxy) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatUint(uint64(p.number), 10))
			switch p.protocol {
			case listenHTTP:
				b.WriteString("h")
			case listenAuto:
				b.WriteString("s") // sniffed
			}
		}
		if probes := appHealthProbes(snap, proxy); probes != nil {
			b.WriteString("/probes=")
			b.WriteString(probes.Key)
		}
	}
	b.WriteString(telemetryConfigKey(snap, proxy))
	common := b.String()
	return Keys{
		Full:    common + labelKey(proxy.Labels, snap.SelectsByLabel),
		Traffic: common + labelKey(proxy.Labels, snap.SelectsTrafficByLabel),
	}
}

// labelKey is the part of a key made of the labels that selects says matter.
func labelKey(labels map[string]string, selects func(labelKey string) bool) string {
	var b strings.Builder
	for _, k := range sortedKeys(labels) {
		if !selects(k) {
			continue
		}
		// Quoted, so that no label value can imitate another label or field.
		b.WriteString("/")
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(labels[k]))
	}
	return b.String()
}
