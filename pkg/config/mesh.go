package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// The mesh configuration is Istio's MeshConfig (istio.io/api mesh/v1alpha1), the `mesh` key of
// istiod's ConfigMap `istio`: Skiff reads the parts about telemetry (extensionProviders,
// defaultProviders, accessLogFile/Encoding/Format, enableTracing, rootNamespace and
// defaultConfig.tracing.sampling) and ignores the rest, as a value that means nothing to it.

// MeshConfigKey is the key of the ConfigMap `istio` that holds the mesh configuration.
const MeshConfigKey = "mesh"

// MeshConfigMapName is the ConfigMap istiod reads its mesh configuration from.
const MeshConfigMapName = "istio"

// DefaultRootNamespace is Istio's root namespace when the mesh configuration names none:
// Telemetry (and other policy) objects there apply to the whole mesh.
const DefaultRootNamespace = "istio-system"

// Providers Istio's default mesh configuration defines, and Skiff with it.
const (
	// PrometheusProvider is the metrics provider of Istio's standard metrics, which Skiff counts
	// in pilot from the proxies' access logs (package telemetry).
	PrometheusProvider = "prometheus"
	// EnvoyProvider writes access logs to the proxy's stdout.
	EnvoyProvider = "envoy"
)

// DefaultMeshConfig is the mesh configuration of Istio's standard installation: the built-in
// providers `prometheus` and `envoy` (a file access log on /dev/stdout), tracing enabled, root
// namespace istio-system, and, when istioMetrics, Istio's standard metrics on by default
// (defaultProviders.metrics [prometheus], as the istiod Helm chart's mesh configuration has).
// Access logs and tracing are off until a Telemetry or defaultProviders asks for them.
func DefaultMeshConfig(istioMetrics bool) *meshconfig.MeshConfig {
	m := &meshconfig.MeshConfig{
		EnableTracing:     true,
		AccessLogEncoding: meshconfig.MeshConfig_TEXT,
		RootNamespace:     DefaultRootNamespace,
		DefaultProviders:  &meshconfig.MeshConfig_DefaultProviders{},
		ExtensionProviders: []*meshconfig.MeshConfig_ExtensionProvider{
			{Name: PrometheusProvider, Provider: &meshconfig.MeshConfig_ExtensionProvider_Prometheus{
				Prometheus: &meshconfig.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{},
			}},
			{Name: EnvoyProvider, Provider: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
				EnvoyFileAccessLog: &meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"},
			}},
		},
	}
	if istioMetrics {
		m.DefaultProviders.Metrics = []string{PrometheusProvider}
	}
	return m
}

// ReadMeshConfig reads a mesh configuration file (pilot's --mesh-config) and applies it over
// base as ParseMeshConfig does. Errors name the file and the field.
func ReadMeshConfig(file string, base *meshconfig.MeshConfig) (*meshconfig.MeshConfig, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("mesh configuration: %w", err)
	}
	m, err := ParseMeshConfig(data, base)
	if err != nil {
		return nil, fmt.Errorf("mesh configuration %s: %w", file, err)
	}
	return m, nil
}

// ParseMeshConfig applies a MeshConfig YAML document over base (which it does not modify), as
// istiod's mesh.ApplyMeshConfig does: fields given replace base's, except that
// defaultProviders is merged field by field (a file that sets only tracing keeps base's
// metrics) and extensionProviders are merged by name (the built-in prometheus and envoy stay
// unless redefined). Unknown fields, wrong types and invalid providers are errors naming the
// field, such as `extensionProviders[1].opentelemetry.port`.
func ParseMeshConfig(data []byte, base *meshconfig.MeshConfig) (*meshconfig.MeshConfig, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	given := &meshconfig.MeshConfig{}
	if !bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		if serr := decodeSpec(js, given); serr != nil {
			return nil, meshFieldError(strings.TrimPrefix(strings.TrimPrefix(serr.field, "spec"), "."), serr.err)
		}
	}
	var top map[string]json.RawMessage
	_ = json.Unmarshal(js, &top)
	var providersGiven map[string]json.RawMessage
	_ = json.Unmarshal(top["defaultProviders"], &providersGiven)

	out := proto.Clone(base).(*meshconfig.MeshConfig)
	providers, extensions := out.DefaultProviders, out.ExtensionProviders
	proto.Merge(out, given)
	// proto.Merge appends lists: defaultProviders and extensionProviders follow istiod's rules.
	out.DefaultProviders = providers
	if out.DefaultProviders == nil {
		out.DefaultProviders = &meshconfig.MeshConfig_DefaultProviders{}
	}
	if _, ok := providersGiven["metrics"]; ok {
		out.DefaultProviders.Metrics = given.GetDefaultProviders().GetMetrics()
	}
	if _, ok := providersGiven["tracing"]; ok {
		out.DefaultProviders.Tracing = given.GetDefaultProviders().GetTracing()
	}
	if _, ok := providersGiven["accessLogging"]; ok {
		out.DefaultProviders.AccessLogging = given.GetDefaultProviders().GetAccessLogging()
	}
	out.ExtensionProviders = extensions
	for _, p := range given.GetExtensionProviders() {
		replaced := false
		for i, e := range out.ExtensionProviders {
			if e.GetName() == p.GetName() {
				out.ExtensionProviders[i] = p
				replaced = true
				break
			}
		}
		if !replaced {
			out.ExtensionProviders = append(out.ExtensionProviders, p)
		}
	}
	if out.RootNamespace == "" {
		out.RootNamespace = DefaultRootNamespace
	}
	if err := validateMeshConfig(given, out); err != nil {
		return nil, err
	}
	return out, nil
}

// meshFieldError is a mesh configuration problem with the field it is about.
func meshFieldError(field string, err error) error {
	if field == "" {
		return err
	}
	return fmt.Errorf("%s: %w", field, err)
}

// validateMeshConfig checks what Skiff reads: the providers given (each named once, of a
// kind Skiff can use, with a service and port where they need one) and that default providers
// name providers that exist.
func validateMeshConfig(given, merged *meshconfig.MeshConfig) error {
	var errs []error
	names := map[string]int{}
	for i, p := range given.GetExtensionProviders() {
		field := fmt.Sprintf("extensionProviders[%d]", i)
		if p.GetName() == "" {
			errs = append(errs, meshFieldError(field+".name", errors.New("required")))
		} else if j, dup := names[p.GetName()]; dup {
			errs = append(errs, meshFieldError(field+".name", fmt.Errorf("%q is already the name of extensionProviders[%d]", p.GetName(), j)))
		}
		names[p.GetName()] = i
		switch prov := p.GetProvider().(type) {
		case *meshconfig.MeshConfig_ExtensionProvider_Opentelemetry:
			errs = append(errs, checkProviderService(field+".opentelemetry", prov.Opentelemetry.GetService(), prov.Opentelemetry.GetPort())...)
		case *meshconfig.MeshConfig_ExtensionProvider_Zipkin:
			errs = append(errs, checkProviderService(field+".zipkin", prov.Zipkin.GetService(), prov.Zipkin.GetPort())...)
		case *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLog:
			if lf := prov.EnvoyFileAccessLog.GetLogFormat(); lf != nil && lf.GetLogFormat() == nil {
				errs = append(errs, meshFieldError(field+".envoyFileAccessLog.logFormat", errors.New("set text or labels")))
			}
		case *meshconfig.MeshConfig_ExtensionProvider_Prometheus:
		case nil:
			errs = append(errs, meshFieldError(field, errors.New("no provider: set opentelemetry, zipkin, envoyFileAccessLog or prometheus")))
		default:
			// Parsed and kept, so that an istiod mesh configuration loads, but never used:
			// naming it in a Telemetry or defaultProviders is reported where it is named.
		}
	}
	known := map[string]bool{}
	for _, p := range merged.GetExtensionProviders() {
		known[p.GetName()] = true
	}
	for field, list := range map[string][]string{
		"defaultProviders.metrics":       merged.GetDefaultProviders().GetMetrics(),
		"defaultProviders.tracing":       merged.GetDefaultProviders().GetTracing(),
		"defaultProviders.accessLogging": merged.GetDefaultProviders().GetAccessLogging(),
	} {
		for i, name := range list {
			if !known[name] {
				errs = append(errs, meshFieldError(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("no extension provider is named %q", name)))
			}
		}
	}
	if s := merged.GetDefaultConfig().GetTracing().GetSampling(); s < 0 || s > 100 {
		errs = append(errs, meshFieldError("defaultConfig.tracing.sampling", fmt.Errorf("%v is not a percentage (0-100)", s)))
	}
	if merged.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON && merged.GetAccessLogFormat() != "" {
		if !json.Valid([]byte(merged.GetAccessLogFormat())) {
			errs = append(errs, meshFieldError("accessLogFormat", errors.New("accessLogEncoding is JSON, but the format is not a JSON object")))
		}
	}
	return errors.Join(errs...)
}

// checkProviderService checks a tracing provider's collector: a service (a hostname of the
// registry, NAMESPACE/HOSTNAME, or a DNS name or IP address outside it) and a port.
func checkProviderService(field, service string, port uint32) []error {
	var errs []error
	switch host := service[strings.IndexByte(service, '/')+1:]; {
	case service == "":
		errs = append(errs, meshFieldError(field+".service", errors.New("required")))
	default:
		if _, err := netip.ParseAddr(host); err != nil {
			if err := checkHostname(host); err != nil {
				errs = append(errs, meshFieldError(field+".service", err))
			}
		}
	}
	if err := checkPort(port); err != nil {
		errs = append(errs, meshFieldError(field+".port", err))
	}
	return errs
}
