// Package model is the immutable, indexed picture of the mesh that translation reads: services
// and their endpoints (from ServiceEntries and WorkloadEntries, or Kubernetes Services,
// EndpointSlices and Pods), the Istio routing and policy objects, and the proxies that connect. A Snapshot is built once per configuration change and never
// modified afterwards, so any number of goroutines may translate from it at the same time.
package model

import (
	"fmt"
	"net/netip"
	"strings"
)

// NodeType is the first field of an Istio node ID.
type NodeType string

const (
	// SidecarProxy is an Envoy beside one workload.
	SidecarProxy NodeType = "sidecar"
	// Router is a standalone gateway Envoy.
	Router NodeType = "router"
)

// InterceptionMode says whether the proxy's traffic is captured (iptables) or not. It is taken
// from node metadata as Istio does: it changes which listeners bind, not what the proxy may see,
// so it is not a security claim.
type InterceptionMode string

const (
	// InterceptionRedirect: traffic reaches Envoy through virtualOutbound/virtualInbound, so
	// service listeners do not bind.
	InterceptionRedirect InterceptionMode = "REDIRECT"
	// InterceptionNone: nothing is captured; service listeners bind so applications can call them.
	InterceptionNone InterceptionMode = "NONE"
)

// Proxy is what pilot knows about a connected Envoy, parsed from its node ID
// `TYPE~IP~POD.NAMESPACE~DNS_DOMAIN` (Istio's format).
type Proxy struct {
	NodeID           string
	Type             NodeType
	IP               netip.Addr
	ID               string // POD.NAMESPACE
	Name             string // the pod (or workload) name
	Namespace        string
	DNSDomain        string // NAMESPACE.svc.cluster.local
	InterceptionMode InterceptionMode
	// Labels are the workload's labels, which select the Gateways, Sidecars and policies that
	// apply to it. Like INTERCEPTION_MODE they choose configuration, not identity: what a
	// proxy may prove about itself (its certificate) never comes from here.
	Labels map[string]string
}

// ParseNodeID parses an Istio node ID. The error names the part that is wrong, because a
// malformed ID is the most common mistake when people bootstrap Envoy by hand.
func ParseNodeID(nodeID string) (*Proxy, error) {
	if nodeID == "" {
		return nil, fmt.Errorf("node ID is empty: want TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local with TYPE %s or %s", SidecarProxy, Router)
	}
	parts := strings.Split(nodeID, "~")
	if len(parts) != 4 {
		return nil, fmt.Errorf("node ID %q: want 4 parts TYPE~IP~POD.NAMESPACE~DOMAIN separated by '~', got %d", nodeID, len(parts))
	}
	p := &Proxy{NodeID: nodeID, Type: NodeType(parts[0]), ID: parts[2], DNSDomain: parts[3]}
	if p.Type != SidecarProxy && p.Type != Router {
		return nil, fmt.Errorf("node ID %q: type %q: want %q or %q", nodeID, parts[0], SidecarProxy, Router)
	}
	ip, err := netip.ParseAddr(parts[1])
	if err != nil {
		return nil, fmt.Errorf("node ID %q: IP %q: %w", nodeID, parts[1], err)
	}
	p.IP = ip
	// Namespaces are DNS labels and cannot contain dots; pod names can, so split at the last one.
	dot := strings.LastIndexByte(p.ID, '.')
	if dot <= 0 || dot == len(p.ID)-1 {
		return nil, fmt.Errorf("node ID %q: ID %q: want POD.NAMESPACE", nodeID, p.ID)
	}
	p.Name, p.Namespace = p.ID[:dot], p.ID[dot+1:]
	if p.DNSDomain == "" {
		return nil, fmt.Errorf("node ID %q: DNS domain is empty: want NAMESPACE.svc.cluster.local", nodeID)
	}
	p.InterceptionMode = InterceptionRedirect
	return p, nil
}

// SetInterceptionMode applies the INTERCEPTION_MODE node metadata value; anything but NONE means
// captured, as in Istio.
func (p *Proxy) SetInterceptionMode(v string) {
	if strings.EqualFold(v, string(InterceptionNone)) {
		p.InterceptionMode = InterceptionNone
	} else {
		p.InterceptionMode = InterceptionRedirect
	}
}

// Class is the key of the proxy's configuration class: proxies with equal classes get identical
// listeners, routes and clusters, so pilot translates once per class and shares the result. Every
// input translation reads from the proxy must be part of this key.
//
// Today that is one class per workload instance: the node ID's name picks a Pod (whose labels
// replace the proxy's, see Snapshot.ResolveProxy) or a WorkloadEntry (whose labels do too, and
// whose ports a captured sidecar's virtualInbound serves), and the IP is read as well: without
// capture listeners bind it, and a captured sidecar that names no workload serves the
// endpoints at that IP (Snapshot.ServedEndpoints). Keying by what those lookups
// yield would let identical pods share, but needs the snapshot, which the class key is
// computed without; a per-workload key stays correct when a Pod's labels change, because each
// push translates the class again from the new snapshot. (Configurations are shared by
// translate.ConfigKey, which does use the snapshot.)
func (p *Proxy) Class() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/%s/%s/%s", p.Type, p.Namespace, p.DNSDomain, p.InterceptionMode, p.Name)
	if p.InterceptionMode == InterceptionNone || p.Type == SidecarProxy {
		fmt.Fprintf(&b, "/%s", p.IP)
	}
	for _, k := range sortedKeys(p.Labels) {
		fmt.Fprintf(&b, "/%s=%s", k, p.Labels[k])
	}
	return b.String()
}
