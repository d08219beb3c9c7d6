package model

import (
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// telemetrySnapshot builds a snapshot of Telemetry documents over a mesh configuration with
// the providers otel, zipkin (tracing) and the built-in envoy and prometheus.
func telemetrySnapshot(t *testing.T, meshYAML string, docs ...string) *Snapshot {
	t.Helper()
	mesh, err := config.ParseMeshConfig([]byte(`extensionProviders:
- {name: otel, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}}
- {name: zipkin, zipkin: {service: zipkin.example.com, port: 9411}}
`+meshYAML), config.DefaultMeshConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	var objs []config.Object
	if len(docs) > 0 {
		if objs, err = config.Parse("telemetry.yaml", []byte(strings.Join(docs, "\n---\n"))); err != nil {
			t.Fatal(err)
		}
	}
	set := config.NewSet(objs...)
	set.Mesh = mesh
	return Build(set)
}

func telemetryDoc(name, ns, spec string) string {
	return "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + spec
}

func sidecar(ns string, labels map[string]string) *Proxy {
	return &Proxy{Type: SidecarProxy, Name: "app-1", Namespace: ns, Labels: labels}
}

func providerName(p *meshconfig.MeshConfig_ExtensionProvider) string { return p.GetName() }

// TestTelemetryDefaults: without Telemetry, the mesh's defaults: Istio's metrics on (the
// prometheus default provider), no access logs, no tracing; defaultProviders.tracing turns
// tracing on for both sides at the mesh's sampling.
func TestTelemetryDefaults(t *testing.T) {
	tel := telemetrySnapshot(t, "").TelemetryFor(sidecar("default", nil))
	if !tel.Client.Metrics || !tel.Server.Metrics || tel.Client.Tracing != nil || len(tel.Client.AccessLogs) != 0 {
		t.Errorf("defaults: %+v, want metrics on both sides and nothing else", tel)
	}
	tel = telemetrySnapshot(t, "defaultProviders: {tracing: [zipkin], metrics: []}\ndefaultConfig: {tracing: {sampling: 5}}\n").
		TelemetryFor(sidecar("default", nil))
	if tel.Client.Metrics || tel.Server.Metrics {
		t.Error("defaultProviders.metrics [] leaves Istio's metrics on")
	}
	for _, tr := range []*TracingSpec{tel.Client.Tracing, tel.Server.Tracing} {
		if tr == nil || providerName(tr.Provider) != "zipkin" || tr.RandomSamplingPercentage != 5 {
			t.Errorf("default tracing: %+v, want zipkin at 5%%", tr)
		}
	}
}

// TestTelemetrySelection: root namespace, then namespace, then the workload's own, later
// overriding earlier; other namespaces' and other workloads' Telemetry never apply.
func TestTelemetrySelection(t *testing.T) {
	snap := telemetrySnapshot(t, "",
		telemetryDoc("mesh", "istio-system", "  tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]\n  accessLogging: [{providers: [{name: envoy}]}]\n"),
		telemetryDoc("ns", "shop", "  tracing: [{randomSamplingPercentage: 50}]\n"),
		telemetryDoc("web", "shop", "  selector: {matchLabels: {app: web}}\n  tracing: [{providers: [{name: zipkin}], match: {mode: SERVER}}]\n  metrics: [{overrides: [{disabled: true, match: {mode: CLIENT}}]}]\n  accessLogging: [{disabled: true}]\n"),
		telemetryDoc("other-ns", "other", "  tracing: [{disableSpanReporting: true}]\n"),
	)
	web := snap.TelemetryFor(sidecar("shop", map[string]string{"app": "web"}))
	if got := web.Key; got != "istio-system/mesh,shop/ns,shop/web" {
		t.Errorf("applied %q", got)
	}
	if c := web.Client.Tracing; c == nil || providerName(c.Provider) != "otel" || c.RandomSamplingPercentage != 50 {
		t.Errorf("web client tracing %+v: want otel (root) at 50%% (namespace)", c)
	}
	if s := web.Server.Tracing; s == nil || providerName(s.Provider) != "zipkin" || s.RandomSamplingPercentage != 50 {
		t.Errorf("web server tracing %+v: want zipkin (workload, SERVER) at 50%%", s)
	}
	if web.Client.Metrics || !web.Server.Metrics {
		t.Errorf("web metrics client %v server %v: want off for CLIENT only", web.Client.Metrics, web.Server.Metrics)
	}
	if len(web.Client.AccessLogs)+len(web.Server.AccessLogs) != 0 {
		t.Errorf("web access logs %+v: the workload's Telemetry disables them", web.Client.AccessLogs)
	}
	api := snap.TelemetryFor(sidecar("shop", map[string]string{"app": "api"}))
	if api.Key != "istio-system/mesh,shop/ns" || len(api.Client.AccessLogs) != 1 || api.Server.Tracing == nil ||
		providerName(api.Server.Tracing.Provider) != "otel" {
		t.Errorf("api (no workload Telemetry): %+v", api)
	}
	other := snap.TelemetryFor(sidecar("other", nil))
	if other.Client.Tracing != nil || other.Server.Tracing != nil {
		t.Error("disableSpanReporting in namespace other leaves tracing on")
	}
	if len(other.Client.AccessLogs) != 1 {
		t.Error("the root namespace's access logs do not reach namespace other")
	}
}

// TestTelemetryAccessLogMerge follows istiod's mergeLogs: the last level that names providers
// decides which are in scope, a filter travels with its provider, and a mode-specific entry
// applies to its mode only, leaving the other mode to the levels above.
func TestTelemetryAccessLogMerge(t *testing.T) {
	snap := telemetrySnapshot(t, "extensionProviders: [{name: json, envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {}}}}]\n",
		telemetryDoc("mesh", "istio-system", "  accessLogging: [{providers: [{name: envoy}]}]\n"),
		telemetryDoc("ns", "shop", "  accessLogging: [{providers: [{name: json}], filter: {expression: 'response.code >= 500'}, match: {mode: SERVER}}]\n"),
	)
	tel := snap.TelemetryFor(sidecar("shop", nil))
	if len(tel.Server.AccessLogs) != 1 || providerName(tel.Server.AccessLogs[0].Provider) != "json" ||
		tel.Server.AccessLogs[0].Filter != "response.code >= 500" {
		t.Errorf("server access logs %+v: want json with its filter", tel.Server.AccessLogs)
	}
	// The namespace's entry is for SERVER only: for the client side the root's provider stays.
	if len(tel.Client.AccessLogs) != 1 || providerName(tel.Client.AccessLogs[0].Provider) != "envoy" {
		t.Errorf("client access logs %+v: want the root's envoy", tel.Client.AccessLogs)
	}
}

// TestTelemetryGatewayTargetRefs: a Telemetry with targetRefs of kind Gateway applies to the
// gateway whose gateway-name label names it, and never to sidecars.
func TestTelemetryGatewayTargetRefs(t *testing.T) {
	snap := telemetrySnapshot(t, "",
		telemetryDoc("gw", "istio-system", "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public}]\n  tracing: [{providers: [{name: otel}]}]\n"))
	gw := &Proxy{Type: Router, Name: "gw-1", Namespace: "istio-system", Labels: map[string]string{gatewayNameLabel: "public"}}
	if tel := snap.TelemetryFor(gw); tel.Client.Tracing == nil {
		t.Error("targetRefs Gateway public does not reach its gateway")
	}
	if tel := snap.TelemetryFor(sidecar("istio-system", map[string]string{gatewayNameLabel: "public"})); tel.Client.Tracing != nil {
		t.Error("a Gateway targetRef reached a sidecar")
	}
}

// TestTelemetryWarnings: a provider the mesh does not define, or one of the wrong kind, and
// overrides pilot does not serve are listed as SKF0001 with their field.
func TestTelemetryWarnings(t *testing.T) {
	snap := telemetrySnapshot(t, "",
		telemetryDoc("bad", "shop", "  tracing: [{providers: [{name: missing}]}]\n  accessLogging: [{providers: [{name: otel}]}]\n  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]\n"))
	want := map[string]bool{"spec.tracing[0].providers[0].name": true, "spec.accessLogging[0].providers[0].name": true, "spec.metrics[0].overrides[0]": true}
	for _, w := range snap.Warnings() {
		if w.Kind == "Telemetry" && w.Code == CodeNotServed {
			delete(want, w.Field)
		}
	}
	if len(want) > 0 {
		t.Errorf("no warning for %v", want)
	}
}
