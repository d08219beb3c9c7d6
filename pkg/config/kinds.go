package config

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
)

// The API groups Skiff reads.
const (
	NetworkingGroup = "networking.istio.io"
	SecurityGroup   = "security.istio.io"
	TelemetryGroup  = "telemetry.istio.io"
)

// kindInfo describes one supported kind. Every accepted version of a kind has the same spec
// schema: istio.io/client-go's v1, v1beta1 and v1alpha3 types all embed the one Go type from
// istio.io/api (networking/v1alpha3 for networking, security/v1beta1 for security), so a spec
// decoded for any version is already the v1 spec and needs no conversion.
type kindInfo struct {
	group    string
	versions []string // accepted, the one the Set holds first
	// newObject returns an empty v1 object and a pointer to its spec, for protojson to fill.
	newObject func() (Object, proto.Message)
}

var (
	networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}
	securityVersions   = []string{"v1", "v1beta1"}
	telemetryVersions  = []string{"v1", "v1alpha1"}
)

var kinds = map[string]kindInfo{
	"ServiceEntry": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.ServiceEntry{}
		return o, &o.Spec
	}},
	"WorkloadEntry": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.WorkloadEntry{}
		return o, &o.Spec
	}},
	"VirtualService": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.VirtualService{}
		return o, &o.Spec
	}},
	"DestinationRule": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.DestinationRule{}
		return o, &o.Spec
	}},
	"Gateway": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.Gateway{}
		return o, &o.Spec
	}},
	"Sidecar": {NetworkingGroup, networkingVersions, func() (Object, proto.Message) {
		o := &networkingv1.Sidecar{}
		return o, &o.Spec
	}},
	"PeerAuthentication": {SecurityGroup, securityVersions, func() (Object, proto.Message) {
		o := &securityv1.PeerAuthentication{}
		return o, &o.Spec
	}},
	"AuthorizationPolicy": {SecurityGroup, securityVersions, func() (Object, proto.Message) {
		o := &securityv1.AuthorizationPolicy{}
		return o, &o.Spec
	}},
	// telemetry.istio.io's v1 and v1alpha1 share the spec type of istio.io/api's
	// telemetry/v1alpha1, as the other groups do.
	"Telemetry": {TelemetryGroup, telemetryVersions, func() (Object, proto.Message) {
		o := &telemetryv1.Telemetry{}
		return o, &o.Spec
	}},
}

// lookupKind finds the kind an apiVersion and kind name, or explains what is supported.
func lookupKind(apiVersion, kind string) (kindInfo, error) {
	group, version, ok := strings.Cut(apiVersion, "/")
	info, known := kinds[kind]
	if !ok || !known || info.group != group || !slices.Contains(info.versions, version) {
		return kindInfo{}, fmt.Errorf("unsupported apiVersion/kind %q %q; supported: %s", apiVersion, kind, supportedKinds())
	}
	return info, nil
}

// supportedKinds lists the accepted apiVersions and kinds, for error messages.
func supportedKinds() string {
	byGroup := map[string][]string{}
	for name, info := range kinds {
		byGroup[info.group] = append(byGroup[info.group], name)
	}
	var parts []string
	for _, g := range []string{NetworkingGroup, SecurityGroup, TelemetryGroup} {
		names := byGroup[g]
		slices.Sort(names)
		versions := networkingVersions
		switch g {
		case SecurityGroup:
			versions = securityVersions
		case TelemetryGroup:
			versions = telemetryVersions
		}
		parts = append(parts, fmt.Sprintf("%s/{%s} %s", g, strings.Join(versions, ","), strings.Join(names, ", ")))
	}
	parts = append(parts, kubeKindNames())
	return strings.Join(parts, "; ")
}
