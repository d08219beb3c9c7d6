package skiffctl

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// Resource types of a config dump, by the names proxy-config takes.
const (
	Clusters   = "clusters"
	Listeners  = "listeners"
	Routes     = "routes"
	Endpoints  = "endpoints"
	Secrets    = "secrets"
	Extensions = "extensions"
	Bootstrap  = "bootstrap"
)

// Resource is one resource of a config dump: decoded when its types are linked in (everything
// Skiff generates is), else only its name and JSON, which are enough to list and compare it.
type Resource struct {
	Type string `json:"-"`
	Name string `json:"-"`
	// Static is a resource of Envoy's bootstrap rather than one received over xDS.
	Static bool `json:"-"`
	// State is the Envoy state the dump files it under: ACTIVE, WARMING, DRAINING or ERROR.
	State string `json:"-"`
	// Version is the xDS version it came with, where the dump says.
	Version string        `json:"-"`
	Message proto.Message `json:"-"`
	JSON    json.RawMessage
}

// Dump is a config dump, Envoy's own (/config_dump?include_eds) or pilot's
// (/debug/config_dump), sorted into resources by type.
type Dump struct {
	Resources map[string][]*Resource
}

// Of lists the resources of a type, in the dump's order.
func (d *Dump) Of(typ string) []*Resource { return d.Resources[typ] }

// ParseConfigDump reads a config dump in Envoy's JSON form. Sensitive fields of secrets
// (private keys) are redacted again here, whatever the source did: skiffctl never prints them.
func ParseConfigDump(data []byte) (*Dump, error) {
	var top struct {
		Configs []map[string]json.RawMessage `json:"configs"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("reading config dump: %w", err)
	}
	d := &Dump{Resources: map[string][]*Resource{}}
	for i, section := range top.Configs {
		var typeURL string
		if err := json.Unmarshal(section["@type"], &typeURL); err != nil {
			return nil, fmt.Errorf("config dump section %d: no @type: %w", i, err)
		}
		if err := d.addSection(typeURL[strings.LastIndexByte(typeURL, '.')+1:], section); err != nil {
			return nil, fmt.Errorf("config dump section %d (%s): %w", i, typeURL, err)
		}
	}
	return d, nil
}

// entry is one element of a config dump section's list: the wrapper Envoy puts around each
// resource, with the resource under one of several field names.
type entry map[string]json.RawMessage

func (d *Dump) addSection(kind string, section map[string]json.RawMessage) error {
	list := func(field string) ([]entry, error) {
		raw, ok := section[field]
		if !ok {
			return nil, nil
		}
		var out []entry
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return out, nil
	}
	add := func(typ, field string, static bool, state string, version func(entry) string, pick func(entry) json.RawMessage) error {
		entries, err := list(field)
		if err != nil {
			return err
		}
		for _, e := range entries {
			raw := pick(e)
			if raw == nil {
				continue
			}
			r, err := decodeResource(typ, raw)
			if err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
			r.Static, r.State = static, state
			if version != nil {
				r.Version = version(e)
			}
			d.Resources[typ] = append(d.Resources[typ], r)
		}
		return nil
	}
	field := func(name string) func(entry) json.RawMessage {
		return func(e entry) json.RawMessage { return e[name] }
	}
	versionOf := func(e entry) string {
		var v string
		_ = json.Unmarshal(e["version_info"], &v)
		return v
	}
	var err error
	switch kind {
	case "ClustersConfigDump":
		err = firstErr(
			add(Clusters, "static_clusters", true, "ACTIVE", versionOf, field("cluster")),
			add(Clusters, "dynamic_active_clusters", false, "ACTIVE", versionOf, field("cluster")),
			add(Clusters, "dynamic_warming_clusters", false, "WARMING", versionOf, field("cluster")))
	case "ListenersConfigDump":
		state := func(name string) func(entry) json.RawMessage {
			return func(e entry) json.RawMessage {
				var st map[string]json.RawMessage
				if json.Unmarshal(e[name], &st) != nil {
					return nil
				}
				return st["listener"]
			}
		}
		err = firstErr(
			add(Listeners, "static_listeners", true, "ACTIVE", nil, field("listener")),
			add(Listeners, "dynamic_listeners", false, "ACTIVE", nil, state("active_state")),
			add(Listeners, "dynamic_listeners", false, "WARMING", nil, state("warming_state")))
	case "RoutesConfigDump":
		err = firstErr(
			add(Routes, "static_route_configs", true, "ACTIVE", nil, field("route_config")),
			add(Routes, "dynamic_route_configs", false, "ACTIVE", versionOf, field("route_config")))
	case "EndpointsConfigDump":
		err = firstErr(
			add(Endpoints, "static_endpoint_configs", true, "ACTIVE", nil, field("endpoint_config")),
			add(Endpoints, "dynamic_endpoint_configs", false, "ACTIVE", versionOf, field("endpoint_config")))
	case "SecretsConfigDump":
		err = firstErr(
			add(Secrets, "static_secrets", true, "ACTIVE", nil, field("secret")),
			add(Secrets, "dynamic_active_secrets", false, "ACTIVE", versionOf, field("secret")),
			add(Secrets, "dynamic_warming_secrets", false, "WARMING", versionOf, field("secret")))
	case "EcdsConfigDump":
		err = add(Extensions, "ecds_filters", false, "ACTIVE", versionOf, field("ecds_filter"))
	case "BootstrapConfigDump":
		raw := section["bootstrap"]
		if raw != nil {
			r, derr := decodeResource(Bootstrap, raw)
			if derr != nil {
				return derr
			}
			r.Static, r.State = true, "ACTIVE"
			d.Resources[Bootstrap] = append(d.Resources[Bootstrap], r)
		}
	}
	return err
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// newMessage is an empty message of a resource type, for protojson to fill.
func newMessage(typ string) proto.Message {
	switch typ {
	case Clusters:
		return &clusterv3.Cluster{}
	case Listeners:
		return &listenerv3.Listener{}
	case Routes:
		return &routev3.RouteConfiguration{}
	case Endpoints:
		return &endpointv3.ClusterLoadAssignment{}
	case Secrets:
		return &tlsv3.Secret{}
	case Extensions:
		return &corev3.TypedExtensionConfig{}
	case Bootstrap:
		return &bootstrapv3.Bootstrap{}
	}
	return nil
}

// decodeResource decodes one resource's JSON. A resource that holds a type skiffctl does not
// link (an extension in Envoy's bootstrap, say) keeps its name and JSON only.
func decodeResource(typ string, raw json.RawMessage) (*Resource, error) {
	r := &Resource{Type: typ}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	delete(generic, "@type")
	for _, key := range []string{"name", "cluster_name"} {
		if n, ok := generic[key].(string); ok {
			r.Name = n
			break
		}
	}
	if typ == Bootstrap {
		r.Name = "bootstrap"
	}
	msg := newMessage(typ)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(stripType(raw), msg); err == nil {
		if s, ok := msg.(*tlsv3.Secret); ok {
			msg = translate.RedactSecret(s)
		}
		r.Message = msg
		js, err := render.JSON(msg)
		if err != nil {
			return nil, err
		}
		r.JSON = js
		return r, nil
	}
	if typ == Secrets {
		// Never print a secret that could not be decoded and so not be redacted.
		generic = map[string]any{"name": r.Name, "note": "not decoded; not shown"}
	}
	js, err := json.MarshalIndent(generic, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", typ, r.Name, err)
	}
	r.JSON = js
	return r, nil
}

// stripType removes the "@type" of a resource's JSON: the resource is decoded into its
// message type directly, not as an Any.
func stripType(raw json.RawMessage) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	delete(m, "@type")
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}

// YAML is the resource as YAML with sorted keys, the form --diff compares. Endpoints are
// normalized first (see normalizeEndpoints).
func (r *Resource) YAML() (string, error) {
	js := r.JSON
	if cla, ok := r.Message.(*endpointv3.ClusterLoadAssignment); ok {
		cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
		normalizeEndpoints(cla)
		var err error
		if js, err = render.JSON(cla); err != nil {
			return "", err
		}
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return "", fmt.Errorf("%s %s as YAML: %w", r.Type, r.Name, err)
	}
	return string(y), nil
}

// Names is the sorted names of resources.
func Names(rs []*Resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// normalizeEndpoints clears what Envoy fills in when it dumps the endpoints it holds (its
// defaults: health status HEALTHY for endpoints with none, weight 1, the overprovisioning
// factor 140, empty health check and locality), so that they compare equal with what pilot
// sent, which leaves those unset.
func normalizeEndpoints(cla *endpointv3.ClusterLoadAssignment) {
	for _, llb := range cla.GetEndpoints() {
		if proto.Equal(llb.GetLocality(), &corev3.Locality{}) {
			llb.Locality = nil
		}
		if llb.GetLoadBalancingWeight().GetValue() == 0 {
			llb.LoadBalancingWeight = nil
		}
		for _, lb := range llb.GetLbEndpoints() {
			if lb.GetHealthStatus() == corev3.HealthStatus_HEALTHY {
				lb.HealthStatus = corev3.HealthStatus_UNKNOWN
			}
			if lb.GetLoadBalancingWeight().GetValue() == 1 {
				lb.LoadBalancingWeight = nil
			}
			if ep := lb.GetEndpoint(); ep != nil && proto.Equal(ep.GetHealthCheckConfig(), &endpointv3.Endpoint_HealthCheckConfig{}) {
				ep.HealthCheckConfig = nil
			}
		}
	}
	if p := cla.GetPolicy(); p != nil && p.GetOverprovisioningFactor().GetValue() == 140 {
		p.OverprovisioningFactor = nil
		if proto.Equal(p, &endpointv3.ClusterLoadAssignment_Policy{}) {
			cla.Policy = nil
		}
	}
}
