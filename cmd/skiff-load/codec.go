package main

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// aliasCodec is gRPC's proto codec, except that discovery responses are decoded without
// copying their resources: each resource's value points into the one copy of the message
// taken from gRPC's buffers. The simulated proxies share the cores with the pilot they
// measure, and the standard decode (a copy and an allocation per resource, a megabyte of
// routes per proxy per change) would be most of their cost. A response with a field this
// decoder does not know is decoded by the standard codec.
type aliasCodec struct{}

var standardCodec = encoding.GetCodecV2(protocodec.Name)

func (aliasCodec) Name() string { return protocodec.Name }

func (aliasCodec) Marshal(v any) (mem.BufferSlice, error) { return standardCodec.Marshal(v) }

func (aliasCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *discoveryv3.DiscoveryResponse:
		b := own(data)
		if err := decodeSotw(b, m); err != nil {
			proto.Reset(m)
			return proto.Unmarshal(b, m)
		}
		return nil
	case *discoveryv3.DeltaDiscoveryResponse:
		b := own(data)
		if err := decodeDelta(b, m); err != nil {
			proto.Reset(m)
			return proto.Unmarshal(b, m)
		}
		return nil
	}
	return standardCodec.Unmarshal(data, v)
}

// own returns the message's bytes for the decoded message to point into. A message gRPC
// read into one buffer is kept by taking a reference that is never released: the buffer then
// never goes back to gRPC's pool and is collected with the message. Otherwise it is copied.
func own(data mem.BufferSlice) []byte {
	if len(data) == 1 {
		data[0].Ref()
		return data[0].ReadOnlyData()
	}
	return data.Materialize()
}

// errUnhandled sends a message to the standard decoder.
var errUnhandled = fmt.Errorf("field not handled by the aliasing decoder")

// fields walks the length-delimited fields of b, the only kind discovery responses' handled
// fields are.
func fields(b []byte, each func(num protowire.Number, value []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return errUnhandled
		}
		b = b[n:]
		value, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errUnhandled
		}
		b = b[n:]
		if err := each(num, value); err != nil {
			return err
		}
	}
	return nil
}

func decodeAny(b []byte) (*anypb.Any, error) {
	a := &anypb.Any{}
	err := fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			a.TypeUrl = typeURLString(v)
		case 2:
			a.Value = v
		default:
			return errUnhandled
		}
		return nil
	})
	return a, err
}

// typeURLString reuses the constant for the type URLs a proxy receives.
func typeURLString(b []byte) string {
	for _, u := range typeURLs {
		if string(b) == u {
			return u
		}
	}
	return string(b)
}

func decodeSotw(b []byte, m *discoveryv3.DiscoveryResponse) error {
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			m.VersionInfo = string(v)
		case 2:
			a, err := decodeAny(v)
			if err != nil {
				return err
			}
			m.Resources = append(m.Resources, a)
		case 4:
			m.TypeUrl = typeURLString(v)
		case 5:
			m.Nonce = string(v)
		default:
			return errUnhandled
		}
		return nil
	})
}

func decodeDelta(b []byte, m *discoveryv3.DeltaDiscoveryResponse) error {
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			m.SystemVersionInfo = string(v)
		case 2:
			r := &discoveryv3.Resource{}
			err := fields(v, func(num protowire.Number, v []byte) error {
				var err error
				switch num {
				case 1:
					r.Version = string(v)
				case 2:
					r.Resource, err = decodeAny(v)
				case 3:
					r.Name = string(v)
				default:
					err = errUnhandled
				}
				return err
			})
			if err != nil {
				return err
			}
			m.Resources = append(m.Resources, r)
		case 4:
			m.TypeUrl = typeURLString(v)
		case 5:
			m.Nonce = string(v)
		case 6:
			m.RemovedResources = append(m.RemovedResources, string(v))
		default:
			return errUnhandled
		}
		return nil
	})
}
