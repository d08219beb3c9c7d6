package inject

import (
	"strconv"
	"strings"

	"github.com/skiffmesh/skiff/pkg/appprobe"
)

// The traffic capture contract between the init container (skiff-capture), Envoy's listeners
// (pilot's virtualOutbound and virtualInbound) and the proxy container's user. It is kept here,
// in one place, so that the capture's arguments and the proxy's identity cannot drift apart.
const (
	// OutboundPort is Envoy's virtualOutbound listener, where captured outgoing TCP goes.
	OutboundPort = 15001
	// InboundPort is Envoy's virtualInbound listener, where captured incoming TCP goes.
	InboundPort = 15006
	// ProxyUID and ProxyGID are the proxy's user and group (Istio's istio-proxy, 1337): their
	// traffic is never captured, or Envoy's own connections would loop back into it.
	ProxyUID = 1337
	ProxyGID = 1337

	// AdminPort is Envoy's admin interface, on loopback only.
	AdminPort = 15000
	// ReadinessPort serves the readiness probe (Istio's 15021).
	ReadinessPort = 15021
	// PrometheusPort serves /stats/prometheus (Istio's 15090).
	PrometheusPort = 15090

	// CaptureCommand is the program of the init container's image.
	CaptureCommand = "skiff-capture"
)

// ExcludeInboundPorts are the sidecar's own ports that incoming traffic reaches directly, not
// through virtualInbound: the kubelet's probes (of the sidecar on 15021, of the application on
// the status port 15020) and Prometheus must reach Envoy's listeners, not be routed as
// application traffic. The first three are Istio's `-d 15090,15021,15020`.
var ExcludeInboundPorts = []int{PrometheusPort, ReadinessPort, appprobe.StatusPort, AdminPort}

// CaptureArgs are skiff-capture's arguments: REDIRECT everything to OutboundPort and
// InboundPort except the proxy's own traffic and ExcludeInboundPorts.
func CaptureArgs() []string {
	excluded := make([]string, len(ExcludeInboundPorts))
	for i, p := range ExcludeInboundPorts {
		excluded[i] = strconv.Itoa(p)
	}
	return []string{
		"--outbound-port", strconv.Itoa(OutboundPort),
		"--inbound-port", strconv.Itoa(InboundPort),
		"--proxy-uid", strconv.Itoa(ProxyUID),
		"--proxy-gid", strconv.Itoa(ProxyGID),
		"--exclude-inbound-ports", strings.Join(excluded, ","),
	}
}
