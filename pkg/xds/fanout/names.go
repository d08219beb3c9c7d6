package fanout

import (
	"errors"
	"hash/maphash"
	"sync"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// names interns the resource names stores serve. Every Envoy of a mesh asks for the same few
// thousand cluster names, in every request; Codec decodes them to these copies, so that no
// request allocates them again and no stream holds a copy of its own.
var names = &interner{byName: map[string]string{}}

type interner struct {
	mu     sync.RWMutex
	byName map[string]string
}

// canonical returns the interned copy of name, adding it. Only names of served resources are
// added, so a client cannot grow the table.
func (in *interner) canonical(name string) string {
	in.mu.RLock()
	c, ok := in.byName[name]
	in.mu.RUnlock()
	if ok {
		return c
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if c, ok := in.byName[name]; ok {
		return c
	}
	in.byName[name] = name
	return name
}

// decodeLocked returns the interned copy of a name read from a request, without allocating,
// or a new string for a name no store serves. Names must be UTF-8, as proto3 strings are. The
// caller holds in.mu for reading.
func (in *interner) decodeLocked(b []byte) (string, error) {
	c, ok := in.byName[string(b)]
	if ok {
		return c, nil
	}
	if !utf8.Valid(b) {
		return "", errors.New("not UTF-8")
	}
	return string(b), nil
}

// nameSet is an interned subscription: the resource names one or more requests ask for.
type nameSet struct {
	id    uint64
	names map[string]struct{}
}

func (s *nameSet) has(name string) bool {
	_, ok := s.names[name]
	return ok
}

// maxNameSets bounds a store's table of subscriptions, and maxSetNames the names they hold
// together (sets of clients' choosing may be large: up to MaxRequestNames each). Forgetting
// one costs only a larger answer: a client whose version names a forgotten set is sent
// everything it asks for.
const (
	maxNameSets = 4096
	maxSetNames = 1 << 20
)

// setTable interns the name sets of one store's requests.
type setTable struct {
	seed   maphash.Seed
	lastID uint64
	names  int // in all sets
	byHash map[uint64][]*nameSet
	byID   map[uint64]*nameSet
	// byList finds the set of a list seen before without hashing or comparing its names:
	// listCache hands every request with the same names the same decoded slice, so an ACK
	// (every Envoy's EDS ACK names all of a mesh's clusters, thousands) is one lookup rather
	// than a hash and a map lookup per name. Lists are never modified once decoded.
	byList map[listIdentity]*nameSet
	// listNames counts the names of the lists byList keeps alive, bounded like the sets'.
	listNames int
}

// listIdentity is a decoded list's backing array and length: equal identities, equal lists.
type listIdentity struct {
	first *string
	n     int
}

func newSetTable() setTable {
	return setTable{seed: maphash.MakeSeed(), byHash: map[uint64][]*nameSet{}, byID: map[uint64]*nameSet{}, byList: map[listIdentity]*nameSet{}}
}

// intern returns the set of list. The hash is a sum of the names' hashes, so the order of the
// names does not matter.
func (t *setTable) intern(list []string) *nameSet {
	var id listIdentity
	if len(list) > 0 {
		id = listIdentity{&list[0], len(list)}
		if s, ok := t.byList[id]; ok {
			return s
		}
		if len(t.byList) >= maxNameSets || t.listNames+len(list) > maxSetNames {
			clear(t.byList) // only a shortcut: every set stays
			t.listNames = 0
		}
	}
	var h uint64
	for _, n := range list {
		h += maphash.String(t.seed, n)
	}
	for _, s := range t.byHash[h] {
		if sameNames(s, list) {
			t.remember(id, s)
			return s
		}
	}
	if len(t.byID) >= maxNameSets || t.names+len(list) > maxSetNames {
		*t = setTable{seed: t.seed, lastID: t.lastID, byHash: map[uint64][]*nameSet{}, byID: map[uint64]*nameSet{}, byList: map[listIdentity]*nameSet{}}
	}
	t.names += len(list)
	t.lastID++
	s := &nameSet{id: t.lastID, names: make(map[string]struct{}, len(list))}
	for _, n := range list {
		s.names[n] = struct{}{}
	}
	t.byHash[h] = append(t.byHash[h], s)
	t.byID[s.id] = s
	t.remember(id, s)
	return s
}

// remember makes list id a shortcut to s.
func (t *setTable) remember(id listIdentity, s *nameSet) {
	if id.first != nil {
		t.byList[id] = s
		t.listNames += id.n
	}
}

func sameNames(s *nameSet, list []string) bool {
	if len(s.names) != len(list) {
		return false
	}
	for _, n := range list {
		if !s.has(n) {
			return false
		}
	}
	return true
}

// stashed holds the resource names of state-of-the-world requests between the stream's Recv
// and the cache's CreateWatch (see StashNames).
var stashed sync.Map // *discoveryv3.DiscoveryRequest → []string

// StashNames takes the resource names out of a state-of-the-world request on its way from the
// stream to go-control-plane's server, and Unstash puts them back when the request reaches the
// cache. The server copies the names of every request into a per-stream map that this cache
// never reads (a state-of-the-world version says what the client holds); for EDS, thousands of
// names per stream, that map would be most of pilot's memory.
func StashNames(req *discoveryv3.DiscoveryRequest) {
	stashed.Store(req, req.ResourceNames)
	req.ResourceNames = nil
}

// Unstash restores the names StashNames took from req, if it took any.
func Unstash(req *discoveryv3.DiscoveryRequest) {
	if list, ok := stashed.LoadAndDelete(req); ok {
		req.ResourceNames = list.([]string)
	}
}

// Stashed reports whether req's names are stashed and not yet restored.
func Stashed(req *discoveryv3.DiscoveryRequest) bool {
	_, ok := stashed.Load(req)
	return ok
}

// DropStashed forgets req's names if they were never restored: the server skipped the
// request (a stale nonce) or the stream ended before it reached the cache.
func DropStashed(req *discoveryv3.DiscoveryRequest) { stashed.Delete(req) }

// StashedNames returns the names StashNames took from req and has not restored, for a view of
// the request as the client sent it.
func StashedNames(req *discoveryv3.DiscoveryRequest) []string {
	if list, ok := stashed.Load(req); ok {
		return list.([]string)
	}
	return nil
}
