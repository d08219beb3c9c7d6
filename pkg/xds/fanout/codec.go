package fanout

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Codec is gRPC's proto codec, except that discovery responses are written without copying
// their resources: the resources' encoded bytes, shared by every stream (see Encode), become
// buffers of the outgoing message, and only the few bytes around them (version, nonce, type,
// field tags and lengths) are written per response. The standard codec would marshal each
// stream's response into a buffer of its own, a megabyte of routes per stream in a large mesh,
// all queued at once when a change reaches every proxy. The bytes on the wire are what
// proto.Marshal writes for the same message, up to field order, which protobuf parsers accept
// in any order. Any message with a field this codec does not write goes to the standard codec.
// Install it with grpc.ForceServerCodecV2.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

var standard = encoding.GetCodecV2(protocodec.Name)

// Name is the standard codec's, so clients see no difference.
func (Codec) Name() string { return protocodec.Name }

// Marshal writes discovery responses around their shared resource bytes.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *discoveryv3.DiscoveryResponse:
		if !onlyFields(m, 1, 2, 4, 5) {
			break
		}
		if fields, ok := spliced.Load(answerOf(m.Resources)); ok {
			return sharedAnswerWire(m, fields.([]mem.Buffer)), nil // a store's: plain by construction
		}
		if anysPlain(m.Resources) {
			return sotwWire(m), nil
		}
	case *discoveryv3.DeltaDiscoveryResponse:
		if !onlyFields(m, 1, 2, 4, 5, 6) {
			break
		}
		if out, ok := deltaFieldsWire(m); ok {
			return out, nil // registered resources are plain by construction
		}
		if deltaResourcesPlain(m.Resources) {
			return deltaWire(m), nil
		}
	}
	return standard.Marshal(v)
}

// onlyFields reports whether m sets no fields but the numbered ones, and has no unknown fields.
func onlyFields(m protoreflect.ProtoMessage, numbers ...protoreflect.FieldNumber) bool {
	r := m.ProtoReflect()
	if len(r.GetUnknown()) > 0 {
		return false
	}
	ok := true
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		for _, n := range numbers {
			if fd.Number() == n {
				return true
			}
		}
		ok = false
		return false
	})
	return ok
}

// anysPlain: Any has only type_url and value; the check is for unknown fields.
func anysPlain(list []*anypb.Any) bool {
	for _, a := range list {
		if a == nil || len(a.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	return true
}

func deltaResourcesPlain(list []*discoveryv3.Resource) bool {
	for _, r := range list {
		if r == nil || !onlyFields(r, 1, 2, 3) || (r.Resource != nil && !anysPlain([]*anypb.Any{r.Resource})) {
			return false
		}
	}
	return true
}

// splicer builds a message from small written parts and large shared buffers. Parts are written
// into one scratch slice; their boundaries are kept as offsets because the slice grows.
type splicer struct {
	scratch []byte
	// segments alternate: scratch[from:to] when shared is nil, else shared.
	segments []segment
	start    int // where the current scratch part begins
}

type segment struct {
	from, to int
	shared   []byte
}

// share ends the current written part and adds b without copying it.
func (w *splicer) share(b []byte) {
	if len(b) == 0 {
		return
	}
	w.cut()
	w.segments = append(w.segments, segment{shared: b})
}

func (w *splicer) cut() {
	if len(w.scratch) > w.start {
		w.segments = append(w.segments, segment{from: w.start, to: len(w.scratch)})
		w.start = len(w.scratch)
	}
}

func (w *splicer) buffers() mem.BufferSlice {
	w.cut()
	out := make(mem.BufferSlice, len(w.segments))
	for i, s := range w.segments {
		if s.shared != nil {
			out[i] = mem.SliceBuffer(s.shared) // never freed back to a pool: Free is a no-op
		} else {
			out[i] = mem.SliceBuffer(w.scratch[s.from:s.to])
		}
	}
	return out
}

func (w *splicer) string(num protowire.Number, s string) {
	w.scratch = appendString(w.scratch, num, s)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// anyField writes field num holding a, with a's value shared.
func (w *splicer) anyField(num protowire.Number, a *anypb.Any) {
	w.scratch = protowire.AppendTag(w.scratch, num, protowire.BytesType)
	w.scratch = protowire.AppendVarint(w.scratch, uint64(anySize(a)))
	w.anyBody(a)
}

func (w *splicer) anyBody(a *anypb.Any) {
	w.scratch = appendAnyHead(w.scratch, a)
	w.share(a.Value)
}

// appendAnyHead appends what an encoded Any holds before its value's bytes.
func appendAnyHead(b []byte, a *anypb.Any) []byte {
	b = appendString(b, 1, a.TypeUrl)
	if len(a.Value) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(a.Value)))
	}
	return b
}

func stringSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func anySize(a *anypb.Any) int {
	n := stringSize(1, a.TypeUrl)
	if len(a.Value) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(a.Value))
	}
	return n
}

func sotwWire(m *discoveryv3.DiscoveryResponse) mem.BufferSlice {
	w := &splicer{
		scratch:  make([]byte, 0, 64+len(m.Resources)*(16+len(m.TypeUrl))),
		segments: make([]segment, 0, 2*len(m.Resources)+2),
	}
	w.string(1, m.VersionInfo)
	for _, a := range m.Resources {
		w.anyField(2, a)
	}
	w.string(4, m.TypeUrl)
	w.string(5, m.Nonce)
	return w.buffers()
}

func deltaWire(m *discoveryv3.DeltaDiscoveryResponse) mem.BufferSlice {
	w := &splicer{
		scratch:  make([]byte, 0, 64+len(m.Resources)*(64+len(m.TypeUrl))),
		segments: make([]segment, 0, 2*len(m.Resources)+2),
	}
	w.string(1, m.SystemVersionInfo)
	for _, r := range m.Resources {
		size := stringSize(1, r.Version) + stringSize(3, r.Name)
		if r.Resource != nil {
			size += protowire.SizeTag(2) + protowire.SizeBytes(anySize(r.Resource))
		}
		w.scratch = protowire.AppendTag(w.scratch, 2, protowire.BytesType)
		w.scratch = protowire.AppendVarint(w.scratch, uint64(size))
		w.string(1, r.Version)
		if r.Resource != nil {
			w.anyField(2, r.Resource)
		}
		w.string(3, r.Name)
	}
	w.string(4, m.TypeUrl)
	w.string(5, m.Nonce)
	for _, name := range m.RemovedResources {
		w.scratch = protowire.AppendTag(w.scratch, 6, protowire.BytesType)
		w.scratch = protowire.AppendString(w.scratch, name)
	}
	return w.buffers()
}
