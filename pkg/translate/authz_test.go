package translate_test

import (
	"path/filepath"
	"strings"
	"testing"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/translate"
)

// TestAuthorizationFiltersValidate checks the RBAC configurations of every authz golden case
// against their proto rules. The golden test validates listeners, but validation does not look
// inside the Any that holds each filter's configuration.
func TestAuthorizationFiltersValidate(t *testing.T) {
	for _, in := range authzCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			http, network := translate.AuthorizationFilters(loadCase(t, in), caseProxy(t, in))
			for _, f := range http {
				cfg := &rbachttpv3.RBAC{}
				if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
					t.Fatalf("HTTP filter %s: %v", f.Name, err)
				}
				if err := cfg.ValidateAll(); err != nil {
					t.Errorf("HTTP filter %s fails Validate(): %v", f.Name, err)
				}
			}
			for _, f := range network {
				cfg := &rbacnetworkv3.RBAC{}
				if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
					t.Fatalf("network filter %s: %v", f.Name, err)
				}
				if err := cfg.ValidateAll(); err != nil {
					t.Errorf("network filter %s fails Validate(): %v", f.Name, err)
				}
			}
		})
	}
}

// TestAuthorizationListenersAreStable: translating the same snapshot twice gives equal
// listeners, byte for byte inside their Anys. RBAC policies are a map; packed in random order,
// every push would look like a changed listener and Envoy would drain it for nothing.
func TestAuthorizationListenersAreStable(t *testing.T) {
	for _, in := range authzCases(t) {
		snap, proxy := loadCase(t, in), caseProxy(t, in)
		first := translate.Listeners(snap, proxy)
		for range 20 {
			again := translate.Listeners(snap, proxy)
			if len(again) != len(first) {
				t.Fatalf("%s: %d listeners, then %d", in, len(first), len(again))
			}
			for i := range first {
				if !proto.Equal(first[i], again[i]) {
					t.Fatalf("%s: listener %s differs between two translations", in, first[i].Name)
				}
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
