package config

import (
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// validateTelemetry checks a Telemetry as istiod's validation does: one way to select
// workloads, providers named, sampling a percentage, custom tags with a value, access log
// filters with an expression. Whether the providers exist is a question for the mesh
// configuration, which is reported where the Telemetry is applied (model.Snapshot.Warnings).
func validateTelemetry(v *validator, t *telemetry.Telemetry) {
	targets := 0
	for _, set := range []bool{t.GetSelector() != nil, t.GetTargetRef() != nil, len(t.GetTargetRefs()) > 0} {
		if set {
			targets++
		}
	}
	if targets > 1 {
		v.add("spec", "only one of selector, targetRef or targetRefs may be set")
	}
	validateSelector(v, "spec.selector", t.GetSelector())
	for i, tr := range t.GetTracing() {
		f := idx("spec.tracing", i)
		if tr == nil {
			v.add(f, "must not be null")
			continue
		}
		validateProviderRefs(v, f+".providers", tr.GetProviders())
		if p := tr.GetRandomSamplingPercentage(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
			v.add(f+".randomSamplingPercentage", "%v is not a percentage (0-100)", p.GetValue())
		}
		for _, name := range sortedKeys(tr.GetCustomTags()) {
			tag := tr.GetCustomTags()[name]
			tf := key(f+".customTags", name)
			switch typ := tag.GetType().(type) {
			case *telemetry.Tracing_CustomTag_Literal:
				if typ.Literal.GetValue() == "" {
					v.add(tf+".literal.value", "required")
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if typ.Environment.GetName() == "" {
					v.add(tf+".environment.name", "required")
				}
			case *telemetry.Tracing_CustomTag_Header:
				if typ.Header.GetName() == "" {
					v.add(tf+".header.name", "required")
				}
			case *telemetry.Tracing_CustomTag_Formatter:
				if typ.Formatter.GetValue() == "" {
					v.add(tf+".formatter.value", "required")
				}
			default:
				v.add(tf, "set one of literal, environment, header or formatter")
			}
		}
	}
	for i, al := range t.GetAccessLogging() {
		f := idx("spec.accessLogging", i)
		if al == nil {
			v.add(f, "must not be null")
			continue
		}
		validateProviderRefs(v, f+".providers", al.GetProviders())
		if filter := al.GetFilter(); filter != nil && filter.GetExpression() == "" {
			v.add(f+".filter.expression", "required")
		}
	}
	for i, m := range t.GetMetrics() {
		f := idx("spec.metrics", i)
		if m == nil {
			v.add(f, "must not be null")
			continue
		}
		validateProviderRefs(v, f+".providers", m.GetProviders())
		for j, o := range m.GetOverrides() {
			if o == nil {
				v.add(idx(f+".overrides", j), "must not be null")
			}
		}
	}
}

func validateProviderRefs(v *validator, path string, refs []*telemetry.ProviderRef) {
	for i, p := range refs {
		if p.GetName() == "" {
			v.add(idx(path, i)+".name", "required")
		}
	}
}
