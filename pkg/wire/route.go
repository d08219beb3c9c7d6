package wire

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// A sidecar's route configuration is a thousand virtual hosts of which a VirtualService change
// alters one; pilot keeps each virtual host's bytes and encodes the configuration around them
// (RouteConfiguration), rather than translating and encoding the thousand again.

// routeConfigName and routeConfigVirtualHosts are RouteConfiguration's field numbers 1 and 2.
const routeConfigName, routeConfigVirtualHosts = 1, 2

// RouteConfiguration encodes rc, whose virtual hosts are left out, with the virtual hosts
// given as their encodings (by Marshal) in their place: its name, the virtual hosts, then its
// other fields, the order of field numbers, in which the generated encoder writes. So when
// every part would be written by the generated encoder, the bytes are exactly Marshal's of
// the whole configuration; otherwise they are another encoding of it, the same every time.
// Each of virtualHosts is set to its window in the result, so that a caller keeping them keeps
// no second copy.
func RouteConfiguration(rc *routev3.RouteConfiguration, virtualHosts [][]byte) ([]byte, error) {
	if len(rc.VirtualHosts) > 0 {
		return nil, fmt.Errorf("route configuration %q: virtual hosts both in the message and encoded", rc.GetName())
	}
	rest, err := Marshal(rc)
	if err != nil {
		return nil, err
	}
	var name []byte
	if num, typ, n := protowire.ConsumeField(rest); n > 0 && num == routeConfigName && typ == protowire.BytesType {
		name, rest = rest[:n], rest[n:]
	}
	size := len(name) + len(rest)
	for _, vh := range virtualHosts {
		size += protowire.SizeTag(routeConfigVirtualHosts) + protowire.SizeBytes(len(vh))
	}
	out := make([]byte, 0, size)
	out = append(out, name...)
	for i, vh := range virtualHosts {
		out = protowire.AppendTag(out, routeConfigVirtualHosts, protowire.BytesType)
		out = protowire.AppendBytes(out, vh)
		virtualHosts[i] = out[len(out)-len(vh) : len(out) : len(out)]
	}
	return append(out, rest...), nil
}
