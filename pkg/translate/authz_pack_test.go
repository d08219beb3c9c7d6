package translate_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/translate"
)

// TestAuthorizationFiltersPackLikeMustAny: the RBAC filter configurations, whose policies
// map authz_pack.go encodes itself, are the very bytes MustAny gives for the same message, so
// pilot's change detection and Envoy see what deterministic marshalling would produce.
func TestAuthorizationFiltersPackLikeMustAny(t *testing.T) {
	for _, in := range authzCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			var packed []*anypb.Any
			for _, c := range translate.AuthorizationExtensionConfigs(loadCase(t, in), caseProxy(t, in)) {
				packed = append(packed, c.GetTypedConfig())
			}
			for _, a := range packed {
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Fatalf("%s: %v", a.TypeUrl, err)
				}
				want := translate.MustAny(m)
				if a.TypeUrl != want.TypeUrl || !bytes.Equal(a.Value, want.Value) {
					t.Errorf("%s: packed differently from MustAny:\n got %x\nwant %x", a.TypeUrl, a.Value, want.Value)
				}
			}
		})
	}
}
