package wire

import (
	"bytes"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A route configuration encoded around its virtual hosts' encodings is the encoding of the
// whole, and each virtual host's window in it is that virtual host's encoding.
func TestRouteConfigurationAroundVirtualHosts(t *testing.T) {
	vhs := []*routev3.VirtualHost{
		{Name: "a:80", Domains: []string{"a", "a.ns"}, IncludeRequestAttemptCount: true},
		{Name: "b:80", Domains: []string{"b"}, Routes: []*routev3.Route{{Name: "default", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}}},
	}
	whole := &routev3.RouteConfiguration{Name: "80", VirtualHosts: vhs, ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true, MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(4096)}
	want, err := Marshal(whole)
	if err != nil {
		t.Fatal(err)
	}
	var encoded [][]byte
	for _, vh := range vhs {
		b, err := Marshal(vh)
		if err != nil {
			t.Fatal(err)
		}
		encoded = append(encoded, b)
	}
	copies := [][]byte{bytes.Clone(encoded[0]), bytes.Clone(encoded[1])}
	bare := &routev3.RouteConfiguration{Name: "80", ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true, MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(4096)}
	got, err := RouteConfiguration(bare, encoded)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded around its virtual hosts: %x\nwhole: %x", got, want)
	}
	for i, w := range encoded {
		if !bytes.Equal(w, copies[i]) || len(w) == 0 || &w[0] == &copies[i][0] {
			t.Errorf("virtual host %d: not its window in the configuration", i)
		}
		if start := bytes.Index(got, w); start < 0 || &got[start] != &w[0] {
			t.Errorf("virtual host %d: its window is not in the configuration's bytes", i)
		}
	}
	if _, err := RouteConfiguration(whole, encoded); err == nil {
		t.Error("virtual hosts both in the message and encoded: no error")
	}
}
