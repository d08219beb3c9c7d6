package xds

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// Describe says which configuration objects apply to a proxy and the mTLS mode of each
// direction (translate.Describe), from the snapshot being served. proxyID is a connected
// proxy's node ID or POD.NAMESPACE (the proxy as it connected, labels and interception mode
// included), any node ID, or POD.NAMESPACE of a Pod or WorkloadEntry in the configuration
// (as a captured sidecar of that workload would be).
func (s *Server) Describe(proxyID string) (*translate.Description, error) {
	snap := s.Snapshot()
	if snap == nil {
		return nil, fmt.Errorf("no configuration loaded yet")
	}
	proxy, err := s.proxyToDescribe(snap, proxyID)
	if err != nil {
		return nil, err
	}
	return translate.Describe(snap, proxy), nil
}

func (s *Server) proxyToDescribe(snap *model.Snapshot, proxyID string) (*model.Proxy, error) {
	if _, class, connected := s.tracker.ClassOf(proxyID); connected {
		if proxy := s.cache.Classes()[class]; proxy != nil {
			return proxy, nil
		}
	}
	if strings.Contains(proxyID, "~") {
		proxy, err := model.ParseNodeID(proxyID)
		if err != nil {
			return nil, fmt.Errorf("proxy %q: %w", proxyID, err)
		}
		return proxy, nil
	}
	dot := strings.LastIndexByte(proxyID, '.')
	if dot <= 0 || dot == len(proxyID)-1 {
		return nil, fmt.Errorf("proxy %q: want a node ID or POD.NAMESPACE", proxyID)
	}
	name, ns := proxyID[:dot], proxyID[dot+1:]
	w := snap.Workload(ns, name)
	if w == nil {
		return nil, fmt.Errorf("proxy %q is not connected, and there is no Pod or WorkloadEntry %s in namespace %s", proxyID, name, ns)
	}
	ip := "0.0.0.0"
	if _, err := netip.ParseAddr(w.Address); err == nil {
		ip = w.Address
	}
	proxy, err := model.ParseNodeID(fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", model.SidecarProxy, ip, name, ns, ns))
	if err != nil {
		return nil, fmt.Errorf("proxy %q: %w", proxyID, err)
	}
	return proxy, nil
}

// DescribeHandler serves /debug/describe?proxy=ID as JSON (see Describe).
func (s *Server) DescribeHandler(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("proxy")
	if id == "" {
		http.Error(w, "missing ?proxy=NODE_ID or POD.NAMESPACE; /debug/syncz lists connected proxies", http.StatusBadRequest)
		return
	}
	d, err := s.Describe(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, d)
}
