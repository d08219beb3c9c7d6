package telemetry

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Graph is the mesh's traffic over the last window, as GET /graph/data serves it: workloads
// and services as nodes, and edges from each calling workload to the service it called and
// from the service to the workload that answered, as Kiali's workload graph draws them.
type Graph struct {
	Timestamp time.Time `json:"timestamp"`
	// WindowSeconds is the time the figures cover: the window, or less while pilot has been
	// counting for less than that.
	WindowSeconds float64     `json:"windowSeconds"`
	Nodes         []GraphNode `json:"nodes"`
	Edges         []GraphEdge `json:"edges"`
}

// GraphNode is a workload, a service, or "unknown" (a caller or callee no workload in the
// mesh has the address of).
type GraphNode struct {
	ID        string `json:"id"`
	NodeType  string `json:"nodeType"` // workload, service or unknown
	Namespace string `json:"namespace,omitempty"`
	Workload  string `json:"workload,omitempty"`
	App       string `json:"app,omitempty"`
	Version   string `json:"version,omitempty"`
	Service   string `json:"service,omitempty"` // the host (destination_service)
	Name      string `json:"name"`              // what the page writes on the node
}

// GraphEdge is the traffic of one protocol from one node to another. Rates are per second
// over the window; the error rate and the mTLS share are fractions (0 to 1).
type GraphEdge struct {
	ID       string `json:"id"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Protocol string `json:"protocol"` // http, grpc or tcp
	// Reporter is whose access logs the figures are from: "destination" where the callee's
	// sidecar reported (it alone sees mTLS), else "source" (a callee without a sidecar, an
	// external service); "both" where the edge sums traffic of each kind.
	Reporter    string  `json:"reporter"`
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	RequestRate float64 `json:"requestRate"`
	// ErrorRate is the share of requests answered 5xx, or for gRPC with a status other than OK.
	ErrorRate float64 `json:"errorRate"`
	// Responses are request rates by response class: "2xx", "5xx", ..., "0" for no response.
	Responses map[string]float64 `json:"responses,omitempty"`
	// P99Ms is the 99th percentile of request durations in milliseconds, interpolated in
	// Istio's buckets as histogram_quantile does; null without requests.
	P99Ms                 *float64 `json:"p99Ms"`
	TCPSentRate           float64  `json:"tcpSentRate"`     // bytes per second, to the caller
	TCPReceivedRate       float64  `json:"tcpReceivedRate"` // bytes per second, from the caller
	TCPConnectionsOpened  uint64   `json:"tcpConnectionsOpened"`
	TCPConnectionsClosed  uint64   `json:"tcpConnectionsClosed"`
	ConnectionsOpenedRate float64  `json:"tcpConnectionsOpenedRate"`
	// MTLS is connection_security_policy over the window: "mutual_tls" when all of the
	// traffic was, "none" when none was, "partial" in between, "unknown" when only the
	// source reported (it cannot see the callee's TLS). MTLSShare is the mTLS fraction.
	MTLS      string   `json:"mtls"`
	MTLSShare *float64 `json:"mtlsShare"`
}

// Graph returns the graph of the window ending now. namespace, if not empty, keeps the edges
// with an end in it.
func (s *Service) Graph(namespace string) Graph {
	return buildGraph(s.graph, s.now(), namespace)
}

// buildGraph picks one reporter for each caller-callee pair, so a request seen by both
// sidecars counts once: the destination's where it reported, since only it knows whether mTLS
// carried the request.
func buildGraph(w *window, now time.Time, namespace string) Graph {
	totals, span := w.totals(now)
	seconds := span.Seconds()
	g := Graph{Timestamp: now.UTC(), WindowSeconds: math.Round(seconds*1000) / 1000, Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	if seconds <= 0 {
		return g
	}
	type edgeID struct{ from, to, protocol string }
	type edgeSum struct {
		counts    edgeCounts
		reporters map[string]bool
	}
	nodes := map[string]GraphNode{}
	edges := map[edgeID]*edgeSum{}
	link := func(from, to GraphNode, k edgeKey, c *edgeCounts) {
		if namespace != "" && from.Namespace != namespace && to.Namespace != namespace {
			return
		}
		nodes[from.ID], nodes[to.ID] = from, to
		id := edgeID{from.ID, to.ID, k.protocol}
		e := edges[id]
		if e == nil {
			e = &edgeSum{reporters: map[string]bool{}}
			edges[id] = e
		}
		e.counts.add(c)
		e.reporters[k.reporter] = true
	}
	for k, c := range totals {
		if k.reporter == "source" {
			dk := k
			dk.reporter = "destination"
			if _, ok := totals[dk]; ok {
				continue
			}
		}
		src := workloadNode(k.srcNamespace, k.srcWorkload, k.srcApp, k.srcVersion)
		dst := workloadNode(k.dstNamespace, k.dstWorkload, k.dstApp, k.dstVersion)
		if k.service == "" || k.service == unknown {
			link(src, dst, k, c)
			continue
		}
		svc := GraphNode{ID: "service:" + k.service, NodeType: "service", Namespace: k.serviceNamespace,
			Service: k.service, Name: k.serviceName}
		if svc.Namespace == unknown {
			svc.Namespace = ""
		}
		if svc.Name == "" || svc.Name == unknown {
			svc.Name = k.service
		}
		link(src, svc, k, c)
		if dst.NodeType == "workload" {
			link(svc, dst, k, c)
		}
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, n)
	}
	slices.SortFunc(g.Nodes, func(a, b GraphNode) int { return cmp.Compare(a.ID, b.ID) })
	for id, e := range edges {
		g.Edges = append(g.Edges, edgeOf(id.from, id.to, id.protocol, &e.counts, e.reporters, seconds))
	}
	slices.SortFunc(g.Edges, func(a, b GraphEdge) int { return cmp.Compare(a.ID, b.ID) })
	return g
}

func workloadNode(namespace, workload, app, version string) GraphNode {
	if workload == "" || workload == unknown {
		return GraphNode{ID: unknown, NodeType: unknown, Name: unknown}
	}
	n := GraphNode{ID: "workload:" + namespace + "/" + workload, NodeType: "workload", Namespace: namespace,
		Workload: workload, Name: workload}
	if app != unknown {
		n.App = app
	}
	if version != unknown {
		n.Version = version
	}
	return n
}

func edgeOf(from, to, protocol string, c *edgeCounts, reporters map[string]bool, seconds float64) GraphEdge {
	e := GraphEdge{ID: from + ">" + to + ">" + protocol, Source: from, Target: to, Protocol: protocol,
		Requests: c.requests, Errors: c.errors,
		RequestRate:          rate(c.requests, seconds),
		TCPSentRate:          rate(c.tcpSent, seconds),
		TCPReceivedRate:      rate(c.tcpReceived, seconds),
		TCPConnectionsOpened: c.tcpOpened, TCPConnectionsClosed: c.tcpClosed,
		ConnectionsOpenedRate: rate(c.tcpOpened, seconds),
		MTLS:                  unknown,
	}
	switch {
	case len(reporters) > 1:
		e.Reporter = "both"
	case reporters["destination"]:
		e.Reporter = "destination"
	default:
		e.Reporter = "source"
	}
	if c.requests > 0 {
		e.ErrorRate = round(float64(c.errors) / float64(c.requests))
		e.Responses = map[string]float64{}
		for class, n := range c.codes {
			if n == 0 {
				continue
			}
			name := "0"
			if class > 0 {
				name = string(rune('0'+class)) + "xx"
			}
			e.Responses[name] = rate(n, seconds)
		}
		if p := bucketQuantile(0.99, durationBuckets, c.durations[:]); !math.IsNaN(p) {
			p = round(p)
			e.P99Ms = &p
		}
	}
	if c.secured > 0 {
		share := round(float64(c.mutual) / float64(c.secured))
		e.MTLSShare = &share
		switch c.mutual {
		case c.secured:
			e.MTLS = "mutual_tls"
		case 0:
			e.MTLS = "none"
		default:
			e.MTLS = "partial"
		}
	}
	return e
}

func rate(n uint64, seconds float64) float64 { return round(float64(n) / seconds) }

// round keeps four decimals: the page shows fewer, and JSON of 1/3 needs no seventeen.
func round(v float64) float64 { return math.Round(v*1e4) / 1e4 }
