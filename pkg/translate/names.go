package translate

import "strconv"

// Names Istio gives to generated resources. Keeping them means Istio's documentation and
// tooling habits apply to Skiff's config dumps.
const (
	PassthroughCluster = "PassthroughCluster"
	BlackHoleCluster   = "BlackHoleCluster"
	VirtualOutbound    = "virtualOutbound"
	// VirtualOutboundPort is where captured outbound traffic arrives.
	VirtualOutboundPort = 15001
	VirtualInbound      = "virtualInbound"
	// VirtualInboundPort is where captured inbound traffic arrives.
	VirtualInboundPort = 15006
	// InboundPassthroughCluster takes captured inbound traffic to ports the workload does not
	// declare on to its original destination.
	InboundPassthroughCluster = "InboundPassthroughCluster"
	// AllowAnyVirtualHost is the catch-all virtual host that passes unknown hosts through.
	AllowAnyVirtualHost = "allow_any"
	// BlockAllVirtualHost replaces it under REGISTRY_ONLY.
	BlockAllVirtualHost = "block_all"
	wildcardAddress     = "0.0.0.0"
	localhostAddress    = "127.0.0.1"
)

// OutboundClusterName is `outbound|PORT|SUBSET|HOST`. Built by concatenation, one allocation:
// every route and cluster names one, and fmt costs several.
func OutboundClusterName(port uint32, subset, host string) string {
	var num [10]byte
	return "outbound|" + string(strconv.AppendUint(num[:0], uint64(port), 10)) + "|" + subset + "|" + host
}

// ListenerName is Istio's `ADDRESS_PORT`.
func ListenerName(address string, port uint32) string {
	return address + "_" + strconv.FormatUint(uint64(port), 10)
}

// RouteConfigName is the sidecar route configuration for a port: just the number.
func RouteConfigName(port uint32) string { return strconv.FormatUint(uint64(port), 10) }

// VirtualHostName is a sidecar's virtual host for a service port, Istio's `HOSTNAME:PORT`.
func VirtualHostName(hostname string, port uint32) string {
	return hostname + ":" + strconv.FormatUint(uint64(port), 10)
}
