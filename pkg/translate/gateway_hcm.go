package translate

import (
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/wire"
)

// A gateway's HTTP connection managers: one per HTTPS server (a thousand in istiod's gateway
// benchmark) and one per plaintext port. They are the sidecars' manager with istiod's gateway
// settings: the client is the remote address (gateways face clients directly, so
// X-Forwarded-For is appended rather than trusted), and client certificate details are
// sanitised and set for upstreams.
//
// The managers of one gateway differ only in their stat prefix and route configuration name;
// access logs, tracing and the filters, most of the bytes, are the same in all. So the common
// part is encoded once, and each manager is the encoding of its two own fields followed by the
// common bytes: a protobuf parser merges the fields of concatenated encodings, and the two
// fields are numbered below every common one, so the bytes are exactly what encoding the whole
// manager gives (gateway_hcm_test.go checks both).

// gatewayHCMs packs the connection managers of one gateway proxy's listeners.
type gatewayHCMs struct {
	tel *listenerTelemetry
	// common is the encoded common part, by side: a stat prefix starting `inbound_` takes the
	// server side's telemetry (listenerTelemetry.applyHTTP), as it would unpacked.
	common map[bool][]byte
}

func newGatewayHCMs(tel *listenerTelemetry) *gatewayHCMs {
	return &gatewayHCMs{tel: tel, common: map[bool][]byte{}}
}

// gatewayHTTPConnectionManager is the whole manager of one filter chain, unpacked.
func gatewayHTTPConnectionManager(statPrefix, routeName string, tel *listenerTelemetry) *hcmv3.HttpConnectionManager {
	hcm := newHTTPConnectionManager(statPrefix, tel)
	hcm.UseRemoteAddress = trueValue()
	hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
	hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
		Subject: trueValue(), Cert: true, Dns: true, Uri: true,
	}
	hcm.RouteSpecifier = gatewayRDS(routeName)
	return hcm
}

func gatewayRDS(routeName string) *hcmv3.HttpConnectionManager_Rds {
	return &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		ConfigSource:    ADSConfigSource(),
		RouteConfigName: routeName,
	}}
}

// filter is the connection manager filter of a chain with this stat prefix and route
// configuration, packed as MustAny(gatewayHTTPConnectionManager(...)) would pack it.
func (g *gatewayHCMs) filter(statPrefix, routeName string) *listenerv3.Filter {
	own, err := wire.Marshal(&hcmv3.HttpConnectionManager{StatPrefix: statPrefix, RouteSpecifier: gatewayRDS(routeName)})
	if err != nil {
		panic("translate: packing a gateway's connection manager: " + err.Error())
	}
	side := strings.HasPrefix(statPrefix, "inbound_")
	common, ok := g.common[side]
	if !ok {
		hcm := gatewayHTTPConnectionManager(statPrefix, "", g.tel)
		// Left out of the common part: the two fields each manager has of its own.
		hcm.StatPrefix, hcm.RouteSpecifier = "", nil
		if hcm.CodecType != 0 {
			// Field 1, below the two: the bytes would no longer be the whole manager's.
			panic("translate: a gateway connection manager sets codec_type; pack it whole")
		}
		if common, err = wire.Marshal(hcm); err != nil {
			panic("translate: packing a gateway's connection manager: " + err.Error())
		}
		g.common[side] = common
	}
	value := make([]byte, 0, len(own)+len(common))
	value = append(append(value, own...), common...)
	return &listenerv3.Filter{
		Name: wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{
			TypeUrl: hcmTypeURL,
			Value:   value,
		}},
	}
}

var hcmTypeURL = "type.googleapis.com/" + string(proto.MessageName(&hcmv3.HttpConnectionManager{}))
