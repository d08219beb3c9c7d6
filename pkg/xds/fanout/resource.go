// Package fanout is the resource cache behind pilot's ADS server, built for many streams that
// watch few configurations. Its stores implement go-control-plane's watch interface, so the
// server and its protocol handling stay go-control-plane's; they differ from its LinearCache
// where scale needs it:
//
//   - A resource is marshalled once, deterministically, when it is translated (Encode); every
//     response to every stream shares those bytes. Whether it changed is decided by the hash of
//     its bytes, never by comparing messages.
//   - State-of-the-world streams keep no per-resource state at all. The version a response
//     carries says where the client is: the store's change counter and, for types whose
//     requests name resources (RDS, EDS, SDS), an id of the set of names asked for. From the
//     version an ACK echoes, the store knows what the client holds, so a change of k resources
//     costs O(k) per distinct name set, not O(every watch × every name).
//   - Watches that ask the same thing get one shared answer: subscriptions are interned, and
//     an answer is computed once per (name set, client version) between two changes.
//   - A NACK is traced to the resources at fault (named in Envoy's error_detail, or found by
//     bisecting the change), which that client alone is then served at the version it
//     accepted, until their translation changes (reject.go). A NACK in which nothing is found
//     parks the watch until the next change, instead of answering again with what the client
//     just rejected.
//
// Delta streams keep go-control-plane's per-stream map of returned versions, whose versions
// are the resources' content hashes: a reconnecting delta client that already holds a
// resource (initial_resource_versions) is not sent it again, even by another pilot process.
// Answers update that map in place, and an ACK of an answer given at the store's current
// version is taken as current without comparing it, so a change of k resources costs delta
// streams O(k) each too, not a walk of every name they hold.
package fanout

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/wire"
)

// Resource is one translated resource in its wire form: its deterministic serialisation
// wrapped as it is sent, and the hash of those bytes. It is immutable once encoded, and shared
// by every store and response that holds it. The message itself is not kept: a configuration
// is held as the bytes it is sent as, and decoded again only for debug views.
type Resource struct {
	name  string
	any   *anypb.Any
	hash  string
	delta *discoveryv3.Resource // the same as a delta response carries it (deltaMessage)
	// deltaOnce registers delta's fields with the codec.
	deltaOnce sync.Once
	// field is the resource as a field of a state-of-the-world response, boxed once for
	// every response that shares it (see spliced): its head (field tag, length, type URL,
	// value tag and length) and its value, any.Value itself.
	field [2]mem.Buffer
}

// Encode marshals msg once for every stream that will be sent it. Call it where the resource is
// translated (in parallel), not under a store's lock.
func Encode(typeURL, name string, msg proto.Message) (*Resource, error) {
	b, err := wire.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %q: %w", typeURL, name, err)
	}
	return Encoded(typeURL, name, b), nil
}

// Encoded is Encode for a resource already marshalled (by wire), whose bytes it takes.
func Encoded(typeURL, name string, b []byte) *Resource {
	sum := sha256.Sum256(b)
	r := &Resource{
		name: names.canonical(name),
		any:  &anypb.Any{TypeUrl: typeURL, Value: b},
		// 64 bits of the hash: the version of the resource in delta responses, and how a
		// store tells a changed resource from an unchanged one.
		hash: hex.EncodeToString(sum[:8]),
	}
	r.delta = &discoveryv3.Resource{Name: r.name, Version: r.hash, Resource: r.any}
	head := protowire.AppendTag(nil, 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(anySize(r.any)))
	head = appendAnyHead(head, r.any)
	r.field = [2]mem.Buffer{mem.SliceBuffer(head), mem.SliceBuffer(b)}
	return r
}

// deltaMessage is the resource as a delta response carries it, its fields registered for the
// codec on first use (see deltaFields), so that only resources sent to delta streams pay.
func (r *Resource) deltaMessage() *discoveryv3.Resource {
	r.deltaOnce.Do(func() { registerDeltaFields(r) })
	return r.delta
}

// Name is the resource's name.
func (r *Resource) Name() string { return r.name }

// Message decodes the resource.
func (r *Resource) Message() (proto.Message, error) {
	m, err := r.any.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("decoding %q: %w", r.name, err)
	}
	return m, nil
}

// Hash identifies the resource's content.
func (r *Resource) Hash() string { return r.hash }

// EncodeAll encodes a map of messages by name.
func EncodeAll[M proto.Message](typeURL string, byName map[string]M) (map[string]*Resource, error) {
	out := make(map[string]*Resource, len(byName))
	for name, m := range byName {
		r, err := Encode(typeURL, name, m)
		if err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, nil
}
