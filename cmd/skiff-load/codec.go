package main

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"slices"
	"sync"
	"unsafe"

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

// Marshal writes a state-of-the-world request whose names are an interned list (see
// requestLists) around that list's encoding, made once: every ACK repeats the subscription,
// thousands of EDS names, and the replicas of a workload share one.
func (aliasCodec) Marshal(v any) (mem.BufferSlice, error) {
	req, ok := v.(*discoveryv3.DiscoveryRequest)
	if !ok {
		return standardCodec.Marshal(v)
	}
	encoded := requestLists.encoded(req.ResourceNames)
	if encoded == nil {
		return standardCodec.Marshal(v)
	}
	rest, err := proto.Marshal(&discoveryv3.DiscoveryRequest{
		VersionInfo: req.VersionInfo, Node: req.Node, TypeUrl: req.TypeUrl,
		ResponseNonce: req.ResponseNonce, ErrorDetail: req.ErrorDetail,
	})
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(rest), mem.SliceBuffer(encoded)}, nil
}

// requestLists interns the sorted name lists the proxies subscribe to, with their encoding as
// field 3 (resource_names) of a DiscoveryRequest.
var requestLists = &listInterner{byHash: map[uint64][]*internedList{}, byData: map[*string]*internedList{}}

type listInterner struct {
	mu     sync.Mutex
	byHash map[uint64][]*internedList
	byData map[*string]*internedList // by the list's first element, which identifies it
}

type internedList struct {
	names   []string
	encoded []byte
}

func (in *listInterner) intern(names []string) []string {
	if len(names) == 0 {
		return names
	}
	h := maphash.Hash{}
	h.SetSeed(hashSeed)
	for _, n := range names {
		h.WriteString(n)
		h.WriteByte(0)
	}
	sum := h.Sum64()
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, l := range in.byHash[sum] {
		if slices.Equal(l.names, names) {
			return l.names
		}
	}
	var enc []byte
	for _, n := range names {
		enc = protowire.AppendTag(enc, 3, protowire.BytesType)
		enc = protowire.AppendString(enc, n)
	}
	l := &internedList{names: slices.Clip(names), encoded: enc}
	in.byHash[sum] = append(in.byHash[sum], l)
	in.byData[unsafe.SliceData(l.names)] = l
	return l.names
}

// encoded is the encoding of an interned list, nil for any other.
func (in *listInterner) encoded(names []string) []byte {
	if len(names) == 0 {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if l, ok := in.byData[unsafe.SliceData(names)]; ok && len(l.names) == len(names) {
		return l.encoded
	}
	return nil
}

func (aliasCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *discoveryv3.DiscoveryResponse:
		if len(data) > 1 {
			pieces := make(chunks, len(data))
			for i, b := range data {
				pieces[i] = b.ReadOnlyData()
			}
			if decodeRoutesInPieces(pieces, m) == nil {
				data.Ref()
				held.Store(m, &heldResponse{size: data.Len(), buffers: data, spread: true})
				return nil
			}
			proto.Reset(m)
		}
		b := own(data, m)
		if err := decodeSotw(b, m); err != nil {
			proto.Reset(m)
			defer release(m) // the standard decode copies
			return proto.Unmarshal(b, m)
		}
		return nil
	case *discoveryv3.DeltaDiscoveryResponse:
		b := own(data, m)
		if err := decodeDelta(b, m); err != nil {
			proto.Reset(m)
			defer release(m)
			return proto.Unmarshal(b, m)
		}
		return nil
	}
	return standardCodec.Unmarshal(data, v)
}

// held maps a decoded response to the gRPC buffers its resources point into, until release.
var held sync.Map // proto.Message → *heldResponse

type heldResponse struct {
	size    int             // as gRPC read it
	buffers mem.BufferSlice // what the resources point into
	// spread: into gRPC's pieces, as they came (chunks.go).
	spread bool
}

// own returns the message's bytes for the decoded message m to point into, held until
// release. A message gRPC read into one buffer is kept by taking a reference; one that came in
// several (a buffer per HTTP/2 frame) is copied into one buffer from the fleet's pool.
func own(data mem.BufferSlice, m proto.Message) []byte {
	if len(data) == 1 {
		data.Ref()
		held.Store(m, &heldResponse{size: data.Len(), buffers: data})
		return data[0].ReadOnlyData()
	}
	b := fleetBuffers.Get(data.Len())
	data.CopyTo(*b)
	held.Store(m, &heldResponse{size: data.Len(), buffers: mem.BufferSlice{mem.NewBuffer(b, fleetBuffers)}})
	return *b
}

// release gives the buffers a response was decoded from back to gRPC's pool once the proxy is
// done with the response (nothing it keeps points into it: what it derives is copied out).
// Reused, the buffers for a megabyte of routes per proxy per change are not allocated and
// cleared again each time. A response that is never released is simply collected.
func release(m proto.Message) {
	v, ok := held.LoadAndDelete(m)
	if !ok {
		return
	}
	h := v.(*heldResponse)
	if h.spread {
		for _, a := range m.(*discoveryv3.DiscoveryResponse).GetResources() {
			spreads.Delete(a)
		}
	}
	h.buffers.Free()
}

// recvPool is the buffer pool of the fleet's connections: gRPC's default one clears every
// buffer it hands out, which for the fleet was as much work as reading the bytes; a buffer gRPC
// reads into is overwritten in full anyway. Power-of-two classes from 1 kB; a buffer goes back
// to the class it came from.
type recvPool struct {
	classes [32]sync.Pool
}

func poolClass(length int) int { return max(bits.Len(uint(length-1)), 10) }

func (p *recvPool) Get(length int) *[]byte {
	c := poolClass(length)
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<c)
	return &b
}

func (p *recvPool) Put(b *[]byte) {
	c := bits.Len(uint(cap(*b))) - 1
	if c >= 10 && c < len(p.classes) && cap(*b) == 1<<c {
		p.classes[c].Put(b)
	}
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

// fleetBuffers is the one pool every connection of the fleet reads into.
var fleetBuffers = &recvPool{}
