//go:build !vtprotobuf

package fanout

import routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

// marshalFast has no fast path without the vtprotobuf build tag: go-control-plane's generated
// encoders are only compiled in with it.
func marshalFast(*routev3.RouteConfiguration) ([]byte, bool) { return nil, false }
