package model

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Conflicting Gateway servers (IST0145, istioctl analyze's ConflictingGateways). A gateway
// proxy merges the servers of every Gateway that selects it by port (and bind address), in
// configuration order, as translate/gateway.go does after istiod's mergeGateways, and leaves
// out a server that cannot join what is already on its port:
//
//   - plaintext HTTP servers share a port only with plaintext HTTP servers, TLS servers only
//     with TLS servers (told apart by SNI), and a plaintext TCP server with nothing;
//   - two servers of a port with TLS settings (an HTTP server's httpsRedirect included) may not
//     claim one host, since Envoy rejects two filter chains with the same server name.
//
// The analysis merges for every set of labels a gateway proxy may have: those of each Pod and
// WorkloadEntry some Gateway selects, and each Gateway's selector itself (a proxy labelled by
// node metadata with exactly those labels), and reports each server that one of them leaves
// out, naming the server that holds the port or host.

// serverClass is how a server takes its port, as translate's gatewayServerKind sorts them.
type serverClass int

const (
	classHTTP serverClass = iota // plaintext HTTP
	classTCP                     // plaintext TCP
	classTLS                     // terminates or passes through TLS, matched by SNI
)

func (c serverClass) String() string {
	return [...]string{"a plaintext HTTP server", "a plaintext TCP server", "a TLS server"}[c]
}

// mergedPort is one listener of the simulated merge: who took it, and the TLS hosts claimed.
type mergedPort struct {
	class serverClass
	first string            // GATEWAY spec.servers[N] of the server merged first
	hosts map[string]string // TLS host → the server that claimed it
}

// gatewayConflictWarnings reports the servers left out by a conflict.
func (s *Snapshot) gatewayConflictWarnings(a *gatewayAnalysis) []Warning {
	gateways := s.Config.Gateways
	if len(gateways) < 1 {
		return nil
	}
	// Every label set a gateway proxy may have, deduplicated.
	labelSets := map[string]map[string]string{}
	for _, gw := range gateways {
		labelSets[selectorString(gw.Spec.Selector)] = gw.Spec.Selector
		for _, w := range a.selectedBy(gw.Spec.Selector) {
			labelSets[selectorString(w.Labels)] = w.Labels
		}
	}
	reported := map[string]bool{}
	var out []Warning
	for _, key := range slices.Sorted(maps.Keys(labelSets)) {
		labels := labelSets[key]
		ports := map[string]*mergedPort{}
		for _, gw := range gateways {
			if !labelsMatch(labels, gw.Spec.Selector) {
				continue
			}
			for i, srv := range gw.Spec.Servers {
				class, ok := classifyServer(srv)
				if !ok {
					continue // left out whatever else is there, and reported so
				}
				name := fmt.Sprintf("%s/%s spec.servers[%d]", gw.Namespace, gw.Name, i)
				msg := mergeServer(ports, srv, class, name)
				if msg == "" || reported[name] {
					continue
				}
				reported[name] = true
				out = append(out, Warning{Code: CodeConflictingGateways, Kind: "Gateway", Namespace: gw.Namespace, Name: gw.Name,
					Field:   fmt.Sprintf("spec.servers[%d]", i),
					Message: fmt.Sprintf("%s (for gateway proxies labelled %s): the server is left out there", msg, selectorString(labels))})
			}
		}
	}
	slices.SortStableFunc(out, func(x, y Warning) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	return out
}

// classifyServer sorts a server as translation does; ok is false for one it leaves out on its
// own (unix binds, AUTO_PASSTHROUGH).
func classifyServer(srv *networking.Server) (serverClass, bool) {
	if srv.GetPort() == nil || strings.HasPrefix(srv.GetBind(), "unix://") {
		return 0, false
	}
	switch {
	case ParseProtocol(srv.GetPort().GetProtocol()).IsHTTP():
		return classHTTP, true
	case srv.GetTls() == nil:
		return classTCP, true
	case srv.GetTls().GetMode() == networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		return 0, false
	}
	return classTLS, true
}

// mergeServer merges one server into the ports and returns why it cannot join, or "".
func mergeServer(ports map[string]*mergedPort, srv *networking.Server, class serverClass, name string) string {
	bind := srv.GetBind()
	key := bind + ":" + strconv.FormatUint(uint64(srv.GetPort().GetNumber()), 10)
	where := "port " + strconv.FormatUint(uint64(srv.GetPort().GetNumber()), 10)
	if bind != "" {
		where += " on " + bind
	}
	p := ports[key]
	if p == nil {
		p = &mergedPort{class: class, first: name, hosts: map[string]string{}}
		ports[key] = p
	} else if p.class != class || class == classTCP {
		return fmt.Sprintf("%s is taken by %s, %s, which cannot share it with %s", where, p.first, p.class, class)
	}
	if srv.GetTls() == nil {
		return ""
	}
	// Every server with TLS settings claims its hosts, an HTTP server's httpsRedirect too.
	hosts := sniNames(srv.GetHosts())
	for _, h := range hosts {
		if other, taken := p.hosts[h]; taken {
			return fmt.Sprintf("host %s on %s is already claimed by %s, and Envoy cannot tell two TLS servers of one host apart", h, where, other)
		}
	}
	for _, h := range hosts {
		p.hosts[h] = name
	}
	return ""
}

// sniNames are a server's hosts as SNI names: without their namespace, `*` for any namespace
// and host (translate's sanitizeServerHosts and sniHosts).
func sniNames(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if _, name, ok := strings.Cut(h, "/"); ok {
			h = name
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
