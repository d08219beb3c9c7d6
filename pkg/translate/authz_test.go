package translate_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/wire"
)

// TestAuthorizationFiltersValidate checks the RBAC configurations of every authz golden case
// against their proto rules. The golden test validates the extension configurations, but
// validation does not look inside the Any that holds each filter's configuration.
func TestAuthorizationFiltersValidate(t *testing.T) {
	for _, in := range authzCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			configs := translate.AuthorizationExtensionConfigs(loadCase(t, in), caseProxy(t, in))
			if len(configs) != 6 {
				t.Errorf("%d RBAC configurations, want audit, deny and allow for HTTP and TCP", len(configs))
			}
			for _, c := range configs {
				cfg, err := c.GetTypedConfig().UnmarshalNew()
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				switch cfg.(type) {
				case *rbachttpv3.RBAC, *rbacnetworkv3.RBAC:
				default:
					t.Fatalf("%s holds a %T", c.Name, cfg)
				}
				if err := cfg.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
					t.Errorf("%s fails Validate(): %v", c.Name, err)
				}
			}
		})
	}
}

// TestAuthorizationConfigsAreStable: translating the same snapshot twice gives equal RBAC
// configurations, byte for byte inside their Anys. RBAC policies are a map; packed in random
// order, every push would look like a policy change and be sent again for nothing.
func TestAuthorizationConfigsAreStable(t *testing.T) {
	for _, in := range authzCases(t) {
		snap, proxy := loadCase(t, in), caseProxy(t, in)
		first := translate.AuthorizationExtensionConfigs(snap, proxy)
		for range 20 {
			again := translate.AuthorizationExtensionConfigs(snap, proxy)
			if len(again) != len(first) {
				t.Fatalf("%s: %d configurations, then %d", in, len(first), len(again))
			}
			for i := range first {
				if !proto.Equal(first[i], again[i]) {
					t.Fatalf("%s: configuration %s differs between two translations", in, first[i].Name)
				}
			}
		}
	}
}

// TestAuthorizationLeavesListenersAlone: policies reach a sidecar's listeners only as the
// names of the configurations its RBAC filters fetch and as the mark of the TCP rules on
// chains that end in tcp_proxy (authz_ecds.go), so without those marks its listeners are the
// same, byte for byte, with every authz case's policies and with none: a policy change never
// makes Envoy replace (and drain) an HTTP chain.
func TestAuthorizationLeavesListenersAlone(t *testing.T) {
	for _, in := range authzCases(t) {
		snap, proxy := loadCase(t, in), caseProxy(t, in)
		set := *snap.Config
		set.AuthorizationPolicies = nil
		without := model.Build(&set)
		with, none := translate.Listeners(snap, snap.ResolveProxy(proxy)), translate.Listeners(without, without.ResolveProxy(proxy))
		if len(with) != len(none) {
			t.Fatalf("%s: %d listeners with the policies, %d without", in, len(with), len(none))
		}
		for i := range with {
			unmarked := proto.Clone(with[i]).(*listenerv3.Listener)
			for _, c := range unmarked.FilterChains {
				if c.GetMetadata().GetFilterMetadata()["skiff.rbac"] != nil {
					if !strings.HasPrefix(c.GetFilters()[0].GetName(), "inbound.rbac.tcp.") {
						t.Errorf("%s: listener %s: chain %s is marked, but does not end in tcp_proxy", in, with[i].Name, c.Name)
					}
					c.Metadata = nil
				}
			}
			a, _ := wire.Marshal(unmarked)
			b, _ := wire.Marshal(none[i])
			if !bytes.Equal(a, b) {
				t.Errorf("%s: listener %s changes with the policies", in, with[i].Name)
			}
		}
	}
}

func authzCases(t *testing.T) []string {
	t.Helper()
	cases, err := filepath.Glob("testdata/authz-*.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no authz cases in testdata/: %v", err)
	}
	return cases
}
