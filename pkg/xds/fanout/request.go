package fanout

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Unmarshal is the standard codec's, except that the resource names of discovery requests are
// decoded to the interned copies of the names stores serve. Envoy repeats every name it
// subscribes to in each state-of-the-world ACK (thousands of clusters for EDS); decoded the
// standard way, each ACK would allocate them all again.
//
// A discovery request that cannot be decoded is not an error here: grpc-go would end the stream
// at once with Internal, "failed to unmarshal", as if pilot had failed. It is decoded as an
// empty request instead, and Rejected tells the stream why, so that the stream can end with a
// status that puts the fault where it is (InvalidArgument, or ResourceExhausted for too many
// names).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	var err error
	switch m := v.(type) {
	case *discoveryv3.DiscoveryRequest:
		err = unmarshalInterning(data, m, 3, func(list []string) { m.ResourceNames = list })
	case *discoveryv3.DeltaDiscoveryRequest:
		err = unmarshalInterning(data, m, 3, func(list []string) { m.ResourceNamesSubscribe = list })
	default:
		return standard.Unmarshal(data, v)
	}
	if err != nil {
		m := v.(proto.Message)
		proto.Reset(m)
		rejected.Store(m, err)
	}
	return nil
}

// rejected holds the decoding errors of requests Unmarshal could not decode, until Rejected
// takes them: the stream that received the request asks right away.
var rejected sync.Map // proto.Message → error

// Rejected returns, and forgets, why req could not be decoded; nil for a request that was.
// Every discovery request a stream receives must be asked about, or its entry stays.
func Rejected(req proto.Message) error {
	if err, ok := rejected.LoadAndDelete(req); ok {
		return err.(error)
	}
	return nil
}

// MaxRequestNames bounds the resource names one discovery request may carry. Envoy names every
// EDS cluster it uses in one request, a few thousand in a large mesh; a hundred thousand is far
// beyond any mesh Skiff serves, and still only a few megabytes decoded. Above it, the request
// is refused while decoding, before its names are allocated, so a client cannot make pilot
// hold millions of strings.
const MaxRequestNames = 100_000

// ErrTooManyNames is the decoding error of a request over MaxRequestNames. gRPC reports
// decoding errors as text (Internal, "grpc: failed to unmarshal ..."), so callers that must
// tell it apart look for its message.
var ErrTooManyNames = errors.New("too many resource names")

// unmarshalInterning decodes m from data with its repeated string field nameField interned:
// every other field is decoded by proto.Unmarshal from a copy of its bytes, and set receives
// the names.
func unmarshalInterning(data mem.BufferSlice, m proto.Message, nameField protowire.Number, set func([]string)) error {
	// Only read here: nothing decoded points into the bytes (names are interned or copied,
	// the other fields copied), so a request that arrived in several pieces (an EDS ACK
	// naming thousands of clusters is a few hundred kB) is joined in a pooled buffer rather
	// than in a new allocation per request.
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		joined := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer joined.Free()
		b = joined.ReadOnlyData()
	}
	var rest []byte
	var list []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decoding %T: %w", m, protowire.ParseError(n))
		}
		size := protowire.ConsumeFieldValue(num, typ, b[n:])
		if size < 0 {
			return fmt.Errorf("decoding %T: %w", m, protowire.ParseError(size))
		}
		if num != nameField || typ != protowire.BytesType {
			rest = append(rest, b[:n+size]...)
			b = b[n+size:]
			continue
		}
		// The names are written one after the other: decode the run at once.
		run, count := nameRun(b, nameField)
		if len(list)+count > MaxRequestNames {
			return fmt.Errorf("decoding %T: %w: more than %d", m, ErrTooManyNames, MaxRequestNames)
		}
		decoded, err := lists.decode(run, nameField)
		if err != nil {
			return fmt.Errorf("decoding %T: resource names: %w", m, err)
		}
		if list == nil {
			list = decoded // shared: never appended to in place (see below)
		} else {
			list = append(slices.Clip(list), decoded...)
		}
		b = b[len(run):]
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	set(list)
	return nil
}

// nameRun is the longest prefix of b made of nameField entries, and how many there are.
func nameRun(b []byte, nameField protowire.Number) (run []byte, count int) {
	end := 0
	for end < len(b) {
		num, typ, n := protowire.ConsumeTag(b[end:])
		if n < 0 || num != nameField || typ != protowire.BytesType {
			break
		}
		size := protowire.ConsumeFieldValue(num, typ, b[end+n:])
		if size < 0 {
			break
		}
		end += n + size
		count++
	}
	return b[:end], count
}

// lists remembers decoded runs of names by their bytes. Every state-of-the-world ACK repeats
// the proxy's whole subscription, and the replicas of a workload subscribe to the same names
// in the same order: a run seen before is handed out again, shared, instead of being decoded
// name by name. Callers must not modify the lists.
var lists = &listCache{seed: maphash.MakeSeed(), byHash: map[uint64]decodedRun{}}

// maxRunBytes bounds the bytes the cache keeps (an EDS subscription of 3,000 clusters is about
// 200 kB); when full it starts again. Distinct subscriptions are about as many as distinct
// configurations, so a mesh's all fit. A run is counted with what its decoded list costs, a
// string header per name and the bytes of names no store serves, so that runs of a million
// one-letter names (a client's choice) cannot hold ten times the bound.
const maxRunBytes = 64 << 20

// runCost is the memory a cached run holds: its raw bytes, the list's string headers, and at
// most its raw bytes again for names that were not interned.
func runCost(run []byte, list []string) int { return 2*len(run) + 16*len(list) }

type listCache struct {
	seed   maphash.Seed
	mu     sync.Mutex
	bytes  int // raw bytes held
	byHash map[uint64]decodedRun
}

type decodedRun struct {
	raw  []byte
	list []string
}

func (c *listCache) decode(run []byte, nameField protowire.Number) ([]string, error) {
	h := maphash.Bytes(c.seed, run)
	c.mu.Lock()
	hit, ok := c.byHash[h]
	c.mu.Unlock()
	if ok && bytes.Equal(hit.raw, run) {
		return hit.list, nil
	}
	var list []string
	names.mu.RLock()
	for b := run; len(b) > 0; {
		_, _, n := protowire.ConsumeTag(b)
		value, size := protowire.ConsumeBytes(b[n:])
		name, err := names.decodeLocked(value)
		if err != nil {
			names.mu.RUnlock()
			return nil, err
		}
		list = append(list, name)
		b = b[n+size:]
	}
	names.mu.RUnlock()
	cost := runCost(run, list)
	c.mu.Lock()
	if c.bytes+cost > maxRunBytes {
		clear(c.byHash)
		c.bytes = 0
	}
	c.bytes += cost
	c.byHash[h] = decodedRun{raw: bytes.Clone(run), list: list}
	c.mu.Unlock()
	return list, nil
}
