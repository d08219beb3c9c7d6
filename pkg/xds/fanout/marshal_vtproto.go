//go:build vtprotobuf

package fanout

import routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

// marshalFast is go-control-plane's generated encoder (about twice as fast as protobuf-go's,
// most of all on the maps of route metadata).
func marshalFast(rc *routev3.RouteConfiguration) ([]byte, bool) {
	b, err := rc.MarshalVTStrict()
	return b, err == nil
}
