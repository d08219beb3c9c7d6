package translate_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// TestGatewayConnectionManagersPackLikeMustAny: a gateway's connection managers, which
// gateway_hcm.go packs as their own fields followed by bytes shared by all of them, are the
// very bytes MustAny gives for the whole manager, in every gateway case (gateway-telemetry has
// access logs and a tracer in them). That holds with go-control-plane's generated encoders
// (the vtprotobuf tag, as make builds everything), which write fields in number order;
// protobuf-go writes the route configuration's oneof last instead, so without them the
// managers must only decode the same.
func TestGatewayConnectionManagersPackLikeMustAny(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, in := range cases {
		proxy := caseProxy(t, in)
		if proxy.Type != model.Router {
			continue
		}
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			for _, l := range translate.Listeners(loadCase(t, in), proxy) {
				for _, chain := range l.FilterChains {
					for _, f := range chain.Filters {
						if f.Name != wellknown.HTTPConnectionManager {
							continue
						}
						packed := f.GetTypedConfig()
						hcm, err := packed.UnmarshalNew()
						if err != nil {
							t.Fatalf("%s: %v", l.Name, err)
						}
						want := translate.MustAny(hcm)
						if _, generated := hcm.(interface{ MarshalVTStrict() ([]byte, error) }); !generated {
							again, err := want.UnmarshalNew()
							if err != nil || !proto.Equal(again, hcm) {
								t.Errorf("%s: the packed manager does not decode as the whole one (%v)", l.Name, err)
							}
						} else if packed.TypeUrl != want.TypeUrl || !bytes.Equal(packed.Value, want.Value) {
							t.Errorf("%s: packed differently from MustAny:\n got %x\nwant %x", l.Name, packed.Value, want.Value)
						}
						checked++
					}
				}
			}
		})
	}
	if checked < 5 {
		t.Fatalf("only %d gateway connection managers checked: the gateway cases are gone", checked)
	}
}
