package xds

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// ConfigDump returns what pilot serves the proxy, in the shape of Envoy's own /config_dump so
// the two can be compared side by side. proxyID is a full node ID or POD.NAMESPACE. For a
// connected proxy it is read from the caches that feed its stream ("served"); for a node ID
// that is not connected it is translated from the current snapshot ("generated"), which lets
// people inspect a proxy before starting it.
func (s *Server) ConfigDump(proxyID string) (dump *adminv3.ConfigDump, source string, err error) {
	var byType map[string]map[string]types.Resource
	if _, class, ok := s.tracker.ClassOf(proxyID); ok {
		byType, ok = s.cache.Resources(class)
		if ok {
			source = "served"
		}
	}
	if byType == nil {
		proxy, err := model.ParseNodeID(proxyID)
		if err != nil {
			return nil, "", fmt.Errorf("proxy %q is not connected and is not a node ID: %w", proxyID, err)
		}
		proxy.InterceptionMode = model.InterceptionNone
		snap := s.Snapshot()
		if snap == nil {
			return nil, "", fmt.Errorf("no configuration loaded yet")
		}
		byType = classResources(snap, proxy)
		byType[resourcev3.EndpointType] = endpointResources(snap)
		source = "generated"
	}
	dump, err = buildConfigDump(byType)
	return dump, source, err
}

// buildConfigDump arranges resources as Envoy's admin ConfigDump: clusters, listeners, routes,
// secrets (redacted) and the endpoints of this proxy's EDS clusters, each sorted by name.
func buildConfigDump(byType map[string]map[string]types.Resource) (*adminv3.ConfigDump, error) {
	var names []string
	pack := func(typeURL string) ([]*anypb.Any, error) {
		names = slices.Sorted(maps.Keys(byType[typeURL]))
		out := make([]*anypb.Any, 0, len(names))
		for _, n := range names {
			a, err := anypb.New(byType[typeURL][n])
			if err != nil {
				return nil, fmt.Errorf("packing %s %s: %w", typeURL, n, err)
			}
			out = append(out, a)
		}
		return out, nil
	}
	// Only the endpoints this proxy's clusters ask for.
	eds := map[string]types.Resource{}
	for _, r := range byType[resourcev3.ClusterType] {
		if name := r.(*clusterv3.Cluster).GetEdsClusterConfig().GetServiceName(); name != "" {
			if cla, ok := byType[resourcev3.EndpointType][name]; ok {
				eds[name] = cla
			}
		}
	}
	byType[resourcev3.EndpointType] = eds

	clusters, err := pack(resourcev3.ClusterType)
	if err != nil {
		return nil, err
	}
	routes, err := pack(resourcev3.RouteType)
	if err != nil {
		return nil, err
	}
	endpoints, err := pack(resourcev3.EndpointType)
	if err != nil {
		return nil, err
	}
	cd := &adminv3.ClustersConfigDump{}
	for _, c := range clusters {
		cd.DynamicActiveClusters = append(cd.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{Cluster: c})
	}
	listeners, err := pack(resourcev3.ListenerType) // sets names for the loop below
	if err != nil {
		return nil, err
	}
	ld := &adminv3.ListenersConfigDump{}
	for i, l := range listeners {
		ld.DynamicListeners = append(ld.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name:        names[i],
			ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{Listener: l},
		})
	}
	rd := &adminv3.RoutesConfigDump{}
	for _, r := range routes {
		rd.DynamicRouteConfigs = append(rd.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{RouteConfig: r})
	}
	ed := &adminv3.EndpointsConfigDump{}
	for _, e := range endpoints {
		ed.DynamicEndpointConfigs = append(ed.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{EndpointConfig: e})
	}
	sd, err := secretsConfigDump(byType[resourcev3.SecretType])
	if err != nil {
		return nil, err
	}
	dump := &adminv3.ConfigDump{}
	for _, m := range []proto.Message{cd, ld, rd, sd, ed} {
		a, err := anypb.New(m)
		if err != nil {
			return nil, err
		}
		dump.Configs = append(dump.Configs, a)
	}
	return dump, nil
}

// secretsConfigDump lists the proxy's SDS secrets as Envoy's config_dump does, with every
// sensitive field (private keys above all) replaced by "[redacted]": the debug endpoint must
// never print key material.
func secretsConfigDump(secrets map[string]types.Resource) (*adminv3.SecretsConfigDump, error) {
	sd := &adminv3.SecretsConfigDump{}
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		s, ok := secrets[name].(*tlsv3.Secret)
		if !ok {
			return nil, fmt.Errorf("secret %s: unexpected type %T", name, secrets[name])
		}
		a, err := anypb.New(translate.RedactSecret(s))
		if err != nil {
			return nil, fmt.Errorf("packing secret %s: %w", name, err)
		}
		sd.DynamicActiveSecrets = append(sd.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: name, Secret: a})
	}
	return sd, nil
}

// SynczHandler serves /debug/syncz: every connected proxy with, per type, the version sent, the
// version ACKed and the last NACK with Envoy's error_detail.
func (s *Server) SynczHandler(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, s.Statuses())
}

// ConfigDumpHandler serves /debug/config_dump?proxy=ID as Envoy-style JSON.
func (s *Server) ConfigDumpHandler(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("proxy")
	if id == "" {
		http.Error(w, "missing ?proxy=NODE_ID (or POD.NAMESPACE of a connected proxy); /debug/syncz lists them", http.StatusBadRequest)
		return
	}
	dump, source, err := s.ConfigDump(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	out, err := render.JSON(dump)
	if err != nil {
		http.Error(w, "marshalling config dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Skiff-Config-Source", source)
	_, _ = w.Write(out)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
