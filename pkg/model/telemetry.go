package model

import (
	"slices"
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Telemetry is what the mesh configuration and the Telemetry objects ask of one proxy's
// telemetry, merged as istiod merges them (pilot/pkg/model/telemetry.go): the Telemetry of the
// root namespace without a selector, then that of the proxy's namespace, then those of the
// proxy's namespace that select its workload (by selector, or a gateway by targetRefs), later
// ones overriding earlier ones; defaultProviders apply where no Telemetry names providers.
// Client is the outbound side (sidecars' outbound listeners, gateways), Server the inbound
// side (sidecars' inbound listeners).
type Telemetry struct {
	// Key names the Telemetry objects that applied, and the proxy's type: proxies with equal
	// keys (and namespaces) get equal telemetry. Empty when no Telemetry applies.
	Key            string
	Client, Server TelemetryMode
}

// TelemetryMode is the telemetry of one side of a proxy.
type TelemetryMode struct {
	// Tracing is nil when spans are not reported.
	Tracing *TracingSpec
	// AccessLogs are the file access log providers (envoyFileAccessLog), by provider name,
	// with the filter expression of the Telemetry that asked for each.
	AccessLogs []AccessLogSpec
	// Metrics: Istio's standard metrics are counted for this side (the prometheus provider
	// applies and is not disabled), so its listeners stream access logs to pilot.
	Metrics bool
}

// TracingSpec is a tracing provider with its settings.
type TracingSpec struct {
	Provider *meshconfig.MeshConfig_ExtensionProvider
	// RandomSamplingPercentage is the Telemetry's, else the mesh's defaultConfig.tracing.sampling,
	// else Istio's default of 1%.
	RandomSamplingPercentage float64
	CustomTags               map[string]*telemetry.Tracing_CustomTag
	// UseRequestIDForTraceSampling and DisableContextPropagation are the Telemetry's.
	UseRequestIDForTraceSampling bool
	DisableContextPropagation    bool
}

// AccessLogSpec is one access log provider with the filter (a CEL expression) of the
// Telemetry that asked for it.
type AccessLogSpec struct {
	Provider *meshconfig.MeshConfig_ExtensionProvider
	Filter   string
}

// defaultTraceSampling is istiod's PILOT_TRACE_SAMPLING default, the sampling when nothing
// says otherwise.
const defaultTraceSampling = 1.0

// Mesh is the snapshot's mesh configuration (config.Set.Mesh), Skiff's default when none was
// given.
func (s *Snapshot) Mesh() *meshconfig.MeshConfig {
	if s.Config != nil && s.Config.Mesh != nil {
		return s.Config.Mesh
	}
	return defaultMesh
}

var defaultMesh = config.DefaultMeshConfig(true)

// RootNamespace is the mesh configuration's root namespace.
func (s *Snapshot) RootNamespace() string {
	if ns := s.Mesh().GetRootNamespace(); ns != "" {
		return ns
	}
	return config.DefaultRootNamespace
}

// applicableTelemetries lists the Telemetry objects that apply to the proxy, the weakest
// first: root namespace-wide, namespace-wide, then the workload's own.
func (s *Snapshot) applicableTelemetries(proxy *Proxy) []*telemetryv1.Telemetry {
	if s.Config == nil || len(s.Config.Telemetries) == 0 {
		return nil
	}
	root := s.RootNamespace()
	var rootWide, nsWide *telemetryv1.Telemetry
	var workload []*telemetryv1.Telemetry
	for _, t := range s.Config.Telemetries {
		spec := &t.Spec
		wide := len(spec.GetSelector().GetMatchLabels()) == 0 && spec.GetTargetRef() == nil && len(spec.GetTargetRefs()) == 0
		switch {
		case wide && t.Namespace == root:
			// The first in configuration order, as istiod takes the oldest.
			if rootWide == nil {
				rootWide = t
			}
		case t.Namespace != proxy.Namespace:
		case wide:
			if nsWide == nil {
				nsWide = t
			}
		case telemetrySelects(spec, proxy):
			workload = append(workload, t)
		}
	}
	var out []*telemetryv1.Telemetry
	if rootWide != nil {
		out = append(out, rootWide)
	}
	if nsWide != nil && proxy.Namespace != root {
		out = append(out, nsWide)
	}
	return append(out, workload...)
}

// gatewayNameLabel is the label Istio's gateway deployments carry with the name of their
// Gateway (Gateway API), which a Telemetry's targetRefs name.
const gatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// telemetrySelects reports whether a Telemetry with a selector or target references applies
// to the proxy: by matchLabels, or, for a gateway, a targetRef of kind Gateway naming the
// gateway its labels say it is. Targets of other kinds (Services, for waypoints) select no
// proxy Skiff serves.
func telemetrySelects(spec *telemetry.Telemetry, proxy *Proxy) bool {
	if sel := spec.GetSelector(); sel != nil {
		return labelsMatch(proxy.Labels, sel.GetMatchLabels())
	}
	refs := spec.GetTargetRefs()
	if spec.GetTargetRef() != nil {
		refs = append(refs, spec.GetTargetRef())
	}
	for _, r := range refs {
		if r.GetKind() == "Gateway" && proxy.Type == Router && proxy.Labels[gatewayNameLabel] == r.GetName() {
			return true
		}
	}
	return false
}

// telemetryKey is the Derived key of a proxy's Telemetry.
type telemetryKey struct {
	applied string
	router  bool
}

// TelemetryFor merges the mesh configuration and the Telemetry objects that apply to the
// proxy (which must be resolved, Snapshot.ResolveProxy). The result is shared by every proxy
// of the snapshot with the same applicable objects and type: never modify it.
func (s *Snapshot) TelemetryFor(proxy *Proxy) *Telemetry {
	applied := s.applicableTelemetries(proxy)
	names := make([]string, len(applied))
	for i, t := range applied {
		names[i] = t.Namespace + "/" + t.Name
	}
	key := telemetryKey{applied: strings.Join(names, ","), router: proxy.Type == Router}
	return s.Derived(key, func() any {
		t := &Telemetry{Key: key.applied}
		specs := make([]*telemetry.Telemetry, len(applied))
		for i, a := range applied {
			specs[i] = &a.Spec
		}
		mesh := s.Mesh()
		t.Client.Tracing, t.Server.Tracing = mergeTracing(specs, mesh)
		t.Client.AccessLogs = mergeAccessLogs(specs, mesh, telemetry.WorkloadMode_CLIENT)
		t.Server.AccessLogs = mergeAccessLogs(specs, mesh, telemetry.WorkloadMode_SERVER)
		t.Client.Metrics, t.Server.Metrics = mergeMetrics(specs, mesh)
		return t
	}).(*Telemetry)
}

// Provider finds an extension provider of the mesh configuration by name (case-insensitive,
// as istiod), or nil.
func (s *Snapshot) Provider(name string) *meshconfig.MeshConfig_ExtensionProvider {
	return findProvider(s.Mesh(), name)
}

func findProvider(mesh *meshconfig.MeshConfig, name string) *meshconfig.MeshConfig_ExtensionProvider {
	for _, p := range mesh.GetExtensionProviders() {
		if strings.EqualFold(p.GetName(), name) {
			return p
		}
	}
	return nil
}

func providerNames(refs []*telemetry.ProviderRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.GetName())
	}
	return out
}

// isTracer reports whether a provider can report spans in Skiff.
func isTracer(p *meshconfig.MeshConfig_ExtensionProvider) bool {
	switch p.GetProvider().(type) {
	case *meshconfig.MeshConfig_ExtensionProvider_Opentelemetry, *meshconfig.MeshConfig_ExtensionProvider_Zipkin:
		return true
	}
	return false
}

// mergeTracing is istiod's Telemetries.Tracing: the first default provider, then each
// Telemetry's tracing entries in order, each replacing what it sets for the modes it matches.
func mergeTracing(specs []*telemetry.Telemetry, mesh *meshconfig.MeshConfig) (client, server *TracingSpec) {
	var entries []*telemetry.Tracing
	for _, s := range specs {
		entries = append(entries, s.GetTracing()...)
	}
	defaults := mesh.GetDefaultProviders().GetTracing()
	if len(entries) == 0 && len(defaults) == 0 {
		return nil, nil
	}
	sampling := defaultTraceSampling
	if s := mesh.GetDefaultConfig().GetTracing().GetSampling(); s != 0 {
		sampling = s
	}
	type spec struct {
		TracingSpec
		disabled bool
	}
	c := spec{TracingSpec: TracingSpec{RandomSamplingPercentage: sampling, UseRequestIDForTraceSampling: true}}
	sv := c
	if len(defaults) > 0 {
		c.Provider = findProvider(mesh, defaults[0])
		sv.Provider = c.Provider
	}
	for _, e := range entries {
		targets := []*spec{&c, &sv}
		switch e.GetMatch().GetMode() {
		case telemetry.WorkloadMode_CLIENT:
			targets = []*spec{&c}
		case telemetry.WorkloadMode_SERVER:
			targets = []*spec{&sv}
		}
		for _, t := range targets {
			if names := providerNames(e.GetProviders()); len(names) > 0 {
				// One provider per mode, as istiod: the first.
				t.Provider = findProvider(mesh, names[0])
			}
			if d := e.GetDisableSpanReporting(); d != nil {
				t.disabled = d.GetValue()
			}
			if e.GetCustomTags() != nil {
				t.CustomTags = e.GetCustomTags()
			}
			if p := e.GetRandomSamplingPercentage(); p != nil {
				t.RandomSamplingPercentage = p.GetValue()
			}
			if u := e.GetUseRequestIdForTraceSampling(); u != nil {
				t.UseRequestIDForTraceSampling = u.GetValue()
			}
			if d := e.GetDisableContextPropagation(); d != nil {
				t.DisableContextPropagation = d.GetValue()
			}
		}
	}
	result := func(s spec) *TracingSpec {
		if s.disabled || !isTracer(s.Provider) {
			return nil
		}
		out := s.TracingSpec
		return &out
	}
	return result(c), result(sv)
}

// mergeAccessLogs is istiod's mergeLogs for one mode: the providers of the last Telemetry
// level that names any (else defaultProviders.accessLogging), each enabled or disabled by the
// last entry that speaks of it, with that entry's filter. Only file access logs
// (envoyFileAccessLog) are kept: they are the access log providers Skiff configures.
func mergeAccessLogs(specs []*telemetry.Telemetry, mesh *meshconfig.MeshConfig, mode telemetry.WorkloadMode) []AccessLogSpec {
	defaults := mesh.GetDefaultProviders().GetAccessLogging()
	type state struct {
		disabled bool
		filter   string
	}
	providers := map[string]state{}
	var levels [][]*telemetry.AccessLogging
	for _, s := range specs {
		if len(s.GetAccessLogging()) > 0 {
			levels = append(levels, s.GetAccessLogging())
		}
	}
	if len(levels) == 0 {
		for _, d := range defaults {
			providers[d] = state{}
		}
	} else {
		inScope := slices.Clone(defaults)
		filters := map[string]string{}
		for _, level := range levels {
			var names []string
			for _, e := range level {
				if !matchesMode(e.GetMatch(), mode) {
					continue
				}
				for _, n := range providerNames(e.GetProviders()) {
					names = append(names, n)
					filters[n] = e.GetFilter().GetExpression()
				}
			}
			if len(names) > 0 {
				inScope = names
			}
		}
		parent := defaults
		for _, level := range levels {
			for _, e := range level {
				names := providerNames(e.GetProviders())
				if len(names) == 0 {
					names = parent
				}
				parent = names
				if !matchesMode(e.GetMatch(), mode) {
					continue
				}
				for _, n := range names {
					if !slices.Contains(inScope, n) {
						continue
					}
					if e.GetDisabled().GetValue() {
						providers[n] = state{disabled: true}
					} else {
						providers[n] = state{filter: filters[n]}
					}
				}
			}
		}
	}
	var out []AccessLogSpec
	for _, name := range sortedKeys(providers) {
		st := providers[name]
		p := findProvider(mesh, name)
		if st.disabled || p == nil || p.GetEnvoyFileAccessLog() == nil {
			continue
		}
		out = append(out, AccessLogSpec{Provider: p, Filter: st.filter})
	}
	return out
}

func matchesMode(sel *telemetry.AccessLogging_LogSelector, mode telemetry.WorkloadMode) bool {
	return sel == nil || sel.GetMode() == telemetry.WorkloadMode_CLIENT_AND_SERVER || sel.GetMode() == mode
}

// mergeMetrics is istiod's mergeMetrics reduced to what Skiff counts: whether the prometheus
// provider applies (the last Telemetry level that names metrics providers, else
// defaultProviders.metrics) and is not turned off for a mode by an override that disables
// every metric (no metric named, or ALL_METRICS). Overrides of single metrics or tags are not
// applied: pilot counts every standard metric with Istio's labels.
func mergeMetrics(specs []*telemetry.Telemetry, mesh *meshconfig.MeshConfig) (client, server bool) {
	inScope := mesh.GetDefaultProviders().GetMetrics()
	var entries []*telemetry.Metrics
	for _, s := range specs {
		entries = append(entries, s.GetMetrics()...)
	}
	for _, m := range entries {
		if names := providerNames(m.GetProviders()); len(names) > 0 {
			inScope = names
		}
	}
	prometheus := ""
	for _, n := range inScope {
		if p := findProvider(mesh, n); p.GetPrometheus() != nil {
			prometheus = p.GetName()
		}
	}
	if prometheus == "" {
		return false, false
	}
	client, server = true, true
	parent := mesh.GetDefaultProviders().GetMetrics()
	for _, m := range entries {
		names := providerNames(m.GetProviders())
		if len(names) == 0 {
			names = parent
		}
		parent = names
		if !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, prometheus) }) {
			continue
		}
		for _, o := range m.GetOverrides() {
			if !allMetrics(o.GetMatch()) {
				continue
			}
			// An override naming every metric turns the mode off (disabled: true) or back on.
			on := !o.GetDisabled().GetValue()
			switch o.GetMatch().GetMode() {
			case telemetry.WorkloadMode_CLIENT:
				client = on
			case telemetry.WorkloadMode_SERVER:
				server = on
			default:
				client, server = on, on
			}
		}
	}
	return client, server
}

func allMetrics(sel *telemetry.MetricSelector) bool {
	switch m := sel.GetMetricMatch().(type) {
	case *telemetry.MetricSelector_Metric:
		return m.Metric == telemetry.MetricSelector_ALL_METRICS
	case *telemetry.MetricSelector_CustomMetric:
		return false
	}
	return true
}
