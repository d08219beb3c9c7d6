package fanout

import (
	"runtime"
	"sync"
	"unsafe"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// A state-of-the-world answer (a class's clusters, say: thousands of resources) is one slice
// of resources shared by every stream that is sent it. Writing it resource by resource for
// each response costs the field heads and a buffer per resource again and again: at sync, with
// every response the push budget admits waiting to be written at once, that was most of
// pilot's heap. So a store registers each answer it shares here, with its resources'
// pre-boxed fields (Resource.field), and the codec writes a response that carries it as those
// fields between a few bytes of its own. Answers are forgotten at the store's next change (or
// when the store is collected); a response written after that is spliced resource by resource,
// the same bytes.
var spliced sync.Map // answerID → []mem.Buffer

// answerID names a resources slice by its backing array and length. The map holds the array
// while the answer is registered, so no other slice can have its address then; answers are
// never modified once built.
type answerID struct {
	first **anypb.Any
	n     int
}

func answerOf(list []*anypb.Any) answerID { return answerID{unsafe.SliceData(list), len(list)} }

// sharedAnswers are the answers a store has registered since its last change.
type sharedAnswers struct {
	ids []answerID
}

// newSharedAnswers returns owner's registrations, forgotten when owner is collected.
func newSharedAnswers(owner *Store) *sharedAnswers {
	a := &sharedAnswers{}
	runtime.AddCleanup(owner, (*sharedAnswers).forget, a)
	return a
}

// share registers rs as an answer and returns it as a response carries it.
func (a *sharedAnswers) share(rs []*Resource) []*anypb.Any {
	list := make([]*anypb.Any, len(rs))
	fields := make([]mem.Buffer, 0, 2*len(rs))
	for i, r := range rs {
		list[i] = r.any
		fields = append(fields, r.field[0])
		if r.field[1].Len() > 0 {
			fields = append(fields, r.field[1])
		}
	}
	if len(list) > 0 {
		id := answerOf(list)
		spliced.Store(id, fields)
		a.ids = append(a.ids, id)
	}
	return list
}

// forget drops every registered answer.
func (a *sharedAnswers) forget() {
	for _, id := range a.ids {
		spliced.Delete(id)
	}
	a.ids = nil
}

// sharedAnswerWire writes m, whose resources are a registered answer, around fields: the
// version before them and the type and nonce after, as proto.Marshal orders the fields.
func sharedAnswerWire(m *discoveryv3.DiscoveryResponse, fields []mem.Buffer) mem.BufferSlice {
	own := make([]byte, 0, stringSize(1, m.VersionInfo)+stringSize(4, m.TypeUrl)+stringSize(5, m.Nonce))
	own = appendString(own, 1, m.VersionInfo)
	cut := len(own)
	own = appendString(own, 4, m.TypeUrl)
	own = appendString(own, 5, m.Nonce)
	out := make(mem.BufferSlice, 0, len(fields)+2)
	if cut > 0 {
		out = append(out, mem.SliceBuffer(own[:cut]))
	}
	out = append(out, fields...)
	if len(own) > cut {
		out = append(out, mem.SliceBuffer(own[cut:]))
	}
	return out
}

// deltaFields are, by the delta message of every resource sent to a delta stream
// (Resource.deltaMessage), its non-empty parts as a field of a delta response, boxed once: the
// head (field tag and length, version, the Any's head), the value (Resource.field's), and the
// name. A delta answer is computed per stream, so there is no shared slice to register as for
// state of the world; the codec finds each resource's fields here instead of writing their
// heads for every response, which at a delta sync (thousands of resources in every response
// the push budget admits) was most of the splicing's garbage. An entry goes when its resource
// is collected.
var deltaFields sync.Map // *discoveryv3.Resource → []mem.Buffer

func registerDeltaFields(r *Resource) {
	tail := appendString(nil, 3, r.name)
	head := protowire.AppendTag(nil, 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(stringSize(1, r.hash)+protowire.SizeTag(2)+protowire.SizeBytes(anySize(r.any))+len(tail)))
	head = appendString(head, 1, r.hash)
	head = protowire.AppendTag(head, 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(anySize(r.any)))
	head = appendAnyHead(head, r.any)
	fields := []mem.Buffer{mem.SliceBuffer(head)}
	if r.field[1].Len() > 0 {
		fields = append(fields, r.field[1])
	}
	if len(tail) > 0 {
		fields = append(fields, mem.SliceBuffer(tail))
	}
	deltaFields.Store(r.delta, fields)
	runtime.AddCleanup(r, func(d *discoveryv3.Resource) { deltaFields.Delete(d) }, r.delta)
}

// deltaFieldsWire writes m from its resources' registered fields between a few bytes of its
// own, as deltaWire would; ok is false when a resource has none (one not from Encoded).
func deltaFieldsWire(m *discoveryv3.DeltaDiscoveryResponse) (out mem.BufferSlice, ok bool) {
	out = make(mem.BufferSlice, 0, 3*len(m.Resources)+2)
	if version := appendString(nil, 1, m.SystemVersionInfo); len(version) > 0 {
		out = append(out, mem.SliceBuffer(version))
	}
	for _, r := range m.Resources {
		fields, ok := deltaFields.Load(r)
		if !ok {
			return nil, false
		}
		out = append(out, fields.([]mem.Buffer)...)
	}
	tail := appendString(nil, 4, m.TypeUrl)
	tail = appendString(tail, 5, m.Nonce)
	for _, name := range m.RemovedResources {
		tail = protowire.AppendTag(tail, 6, protowire.BytesType)
		tail = protowire.AppendString(tail, name)
	}
	if len(tail) > 0 {
		out = append(out, mem.SliceBuffer(tail))
	}
	return out, true
}
