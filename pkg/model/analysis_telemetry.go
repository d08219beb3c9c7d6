package model

import (
	"fmt"

	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
)

// telemetryWarnings reports, as SKF0001, what of the Telemetry objects pilot does not serve:
// providers the mesh configuration does not define, or of a kind that cannot do what they are
// named for in Skiff (tracing: opentelemetry and zipkin; access logs: envoyFileAccessLog;
// metrics: prometheus); metric overrides other than turning every metric off or on (pilot
// counts every standard metric with Istio's labels); and targetRefs of kinds other than
// Gateway (waypoints, which Skiff does not run).
func (s *Snapshot) telemetryWarnings() []Warning {
	if s.Config == nil {
		return nil
	}
	mesh := s.Mesh()
	var out []Warning
	for _, t := range s.Config.Telemetries {
		out = append(out, telemetryNotServed(t, mesh)...)
	}
	return out
}

func telemetryNotServed(t *telemetryv1.Telemetry, mesh *meshconfig.MeshConfig) []Warning {
	n := &notServed{kind: "Telemetry", namespace: t.Namespace, name: t.Name}
	check := func(field string, refs []*telemetry.ProviderRef, what string, usable func(*meshconfig.MeshConfig_ExtensionProvider) bool) {
		for i, r := range refs {
			f := fmt.Sprintf("%s[%d].name", field, i)
			switch p := findProvider(mesh, r.GetName()); {
			case p == nil:
				n.add(f, "the mesh configuration has no extension provider %q: nothing is configured for it", r.GetName())
			case !usable(p):
				n.add(f, "provider %q cannot be used for %s in Skiff: nothing is configured for it", r.GetName(), what)
			}
		}
	}
	for i, tr := range t.Spec.GetTracing() {
		check(fmt.Sprintf("spec.tracing[%d].providers", i), tr.GetProviders(), "tracing", isTracer)
	}
	for i, al := range t.Spec.GetAccessLogging() {
		check(fmt.Sprintf("spec.accessLogging[%d].providers", i), al.GetProviders(), "access logs",
			func(p *meshconfig.MeshConfig_ExtensionProvider) bool { return p.GetEnvoyFileAccessLog() != nil })
	}
	for i, m := range t.Spec.GetMetrics() {
		f := fmt.Sprintf("spec.metrics[%d]", i)
		check(f+".providers", m.GetProviders(), "metrics",
			func(p *meshconfig.MeshConfig_ExtensionProvider) bool { return p.GetPrometheus() != nil })
		for j, o := range m.GetOverrides() {
			if !allMetrics(o.GetMatch()) || len(o.GetTagOverrides()) > 0 {
				n.add(fmt.Sprintf("%s.overrides[%d]", f, j), "only overrides that turn every metric off or on are served: pilot counts Istio's standard metrics with their standard labels")
			}
		}
		if m.GetReportingInterval() != nil {
			n.add(f+".reportingInterval", "not served: TCP metrics are reported every 15 s")
		}
	}
	refs := t.Spec.GetTargetRefs()
	if t.Spec.GetTargetRef() != nil {
		refs = append(refs, t.Spec.GetTargetRef())
	}
	for i, r := range refs {
		if r.GetKind() != "Gateway" {
			n.add(fmt.Sprintf("spec.targetRefs[%d]", i), "targets of kind %s (waypoints) select no proxy Skiff serves", r.GetKind())
		}
	}
	return n.out
}
