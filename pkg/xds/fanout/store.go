package fanout

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Store holds the resources of one type for the streams that watch them: one configuration's
// clusters, say, or the whole mesh's endpoints. It implements cachev3.ConfigWatcher; the
// ADS server's cache (pkg/xds) routes each watch to its store.
type Store struct {
	typeURL string
	// wildcard types (listeners, clusters) are answered with every resource in state of the
	// world; the others with the resources the request names.
	wildcard bool
	// prefix starts every version this store sends and tells its versions from any other
	// store's or process's.
	prefix string

	mu sync.Mutex
	// seq counts the store's changes; an entry records the seq at which it last changed.
	seq     uint64
	entries map[string]*entry
	// all is the wildcard answer at seq, built on first use after a change.
	all   []*anypb.Any
	sets  setTable
	sotw  map[*sotwWatch]struct{}
	delta map[*deltaWatch]struct{}
	// acked are the records of delta streams answered since the last change, by address,
	// with the seq they were answered at (see ackedCurrentLocked).
	acked map[unsafe.Pointer]uint64
	// answers are state-of-the-world answers computed since the last change, shared by every
	// watch that asks the same thing from the same version.
	answers map[answerKey][]*anypb.Any
	// shared registers the answers above with the codec (answer.go).
	shared *sharedAnswers

	// overlays are what clients that NACKed are served differently, by node ID (see
	// reject.go); observe is told of rejections.
	overlays map[string]*overlay
	observe  func(Rejection)
}

// entry is a resource as the store serves it, and since when. It remembers the version it
// served before, so that a client's NACK finds the version that client accepted.
type entry struct {
	res *Resource
	seq uint64
	// prev was served from prevSeq to seq; hadPrev is false for a resource new at seq, and
	// prevFresh true for one new at prevSeq.
	prev      *Resource
	prevSeq   uint64
	hadPrev   bool
	prevFresh bool
}

// next is the entry that serves res from seq on, after e.
func (e *entry) next(res *Resource, seq uint64) *entry {
	return &entry{res: res, seq: seq, prev: e.res, prevSeq: e.seq, hadPrev: true, prevFresh: !e.hadPrev}
}

// asOf is what the entry served at seq; known is false when that is older than it remembers.
func (e *entry) asOf(seq uint64) (res *Resource, known bool) {
	switch {
	case seq >= e.seq:
		return e.res, true
	case !e.hadPrev:
		return nil, true
	case seq >= e.prevSeq:
		return e.prev, true
	case e.prevFresh:
		return nil, true
	}
	return nil, false
}

// answerKey is what a state-of-the-world answer depends on besides the store's state: what
// the client asks for and what it has.
type answerKey struct {
	set  *nameSet
	from version
}

var _ cachev3.ConfigWatcher = (*Store)(nil)

// NewStore returns an empty store of typeURL whose versions start with prefix, which must be
// unique in the process and should differ between processes.
func NewStore(typeURL, prefix string) *Store {
	s := &Store{
		typeURL:  typeURL,
		wildcard: typeURL == resourcev3.ListenerType || typeURL == resourcev3.ClusterType,
		prefix:   prefix,
		entries:  map[string]*entry{},
		sets:     newSetTable(),
		sotw:     map[*sotwWatch]struct{}{},
		delta:    map[*deltaWatch]struct{}{},
		acked:    map[unsafe.Pointer]uint64{},
		answers:  map[answerKey][]*anypb.Any{},
	}
	s.shared = newSharedAnswers(s)
	return s
}

// Update makes the store hold exactly want. Resources whose hash is unchanged keep their place,
// so no stream is sent them again. It returns the names of the resources that existed and
// changed. A resource a client rejected and is served at its accepted version stays so while
// its translation is the one rejected, and is tried again once that changes.
func (s *Store) Update(want map[string]*Resource) (modified []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed, removed []string
	for name, r := range want {
		old, ok := s.entries[name]
		if ok && old.res.hash == r.hash {
			continue
		}
		if ok {
			modified = append(modified, name)
		}
		changed = append(changed, name)
	}
	for name := range s.entries {
		if _, ok := want[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(changed) == 0 && len(removed) == 0 {
		return nil
	}
	s.seq++
	for _, name := range changed {
		if old, ok := s.entries[name]; ok {
			s.entries[name] = old.next(want[name], s.seq)
		} else {
			s.entries[name] = &entry{res: want[name], seq: s.seq}
		}
	}
	for _, name := range removed {
		delete(s.entries, name)
	}
	if len(s.overlays) > 0 {
		s.retranslatedLocked(slices.Concat(changed, removed))
	}
	s.changedLocked(changed, removed, false)
	return modified
}

// Resend sends the named resources again, unchanged, to every stream that holds them.
func (s *Store) Resend(list []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var again []string
	for _, name := range list {
		if e, ok := s.entries[name]; ok && e.res != nil {
			again = append(again, name)
		}
	}
	if len(again) == 0 {
		return
	}
	s.seq++
	for _, name := range again {
		s.entries[name] = s.entries[name].next(s.entries[name].res, s.seq)
	}
	s.changedLocked(again, nil, true)
}

// Resources decodes the store's resources, by name: for debug views.
func (s *Store) Resources() (map[string]proto.Message, error) {
	s.mu.Lock()
	held := make([]*Resource, 0, len(s.entries))
	for _, e := range s.entries {
		if e.res != nil {
			held = append(held, e.res)
		}
	}
	s.mu.Unlock()
	out := make(map[string]proto.Message, len(held))
	for _, r := range held {
		m, err := r.Message()
		if err != nil {
			return nil, err
		}
		out[r.name] = m
	}
	return out, nil
}

// changedLocked answers the parked watches that the change concerns. forced: the resources
// did not change but must be sent again, even to delta streams that hold their version.
func (s *Store) changedLocked(changed, removed []string, forced bool) {
	s.all = nil
	clear(s.answers)
	clear(s.acked)
	s.shared.forget()
	slices.Sort(changed)
	bySet := map[*nameSet][]*anypb.Any{}
	for w := range s.sotw {
		var res []*anypb.Any
		if ov := s.overlayLocked(w.node()); ov != nil {
			// Served apart: what it lacks, with what it is held at.
			var since []string
			if !w.nack {
				since = changed
			}
			if res = s.overlayAnswerLocked(ov, w.set, w.from, since); len(res) == 0 && !s.wildcard {
				continue
			}
			s.respondLocked(w, res)
			continue
		}
		if s.wildcard {
			res = s.allLocked()
		} else {
			var ok bool
			if w.nack {
				// It holds what it had before the rejected answer: send all it lacks, once.
				res = s.answerLocked(w.set, w.from)
			} else if res, ok = bySet[w.set]; !ok {
				var rs []*Resource
				for _, name := range changed {
					if e := s.entries[name]; e != nil && e.res != nil && w.set.has(name) {
						rs = append(rs, e.res)
					}
				}
				res = s.shared.share(rs)
				bySet[w.set] = res
			}
			if len(res) == 0 {
				continue // nothing it asks for changed; removals are not sent in state of the world
			}
		}
		s.respondLocked(w, res)
	}
	for w := range s.delta {
		if resp := s.deltaAnswerLocked(w, changed, removed, forced); resp != nil {
			delete(s.delta, w)
			w.ch <- resp
		}
	}
}

// allLocked is every resource, sorted by name.
func (s *Store) allLocked() []*anypb.Any {
	if s.all == nil {
		keys := make([]string, 0, len(s.entries))
		for name, e := range s.entries {
			if e.res != nil {
				keys = append(keys, name)
			}
		}
		slices.Sort(keys)
		rs := make([]*Resource, len(keys))
		for i, name := range keys {
			rs[i] = s.entries[name].res
		}
		s.all = s.shared.share(rs)
	}
	return s.all
}

// version is what a state-of-the-world version says: the store's seq when it was sent and, for
// named requests, the name set it answered. ours is false for versions of other stores or
// processes, and for the empty version of a first request.
type version struct {
	ours bool
	seq  uint64
	set  uint64
}

func (v version) format(prefix string) string {
	out := prefix + strconv.FormatUint(v.seq, 10)
	if v.set != 0 {
		out += "." + strconv.FormatUint(v.set, 10)
	}
	return out
}

func (s *Store) parseVersion(v string) version {
	rest, ok := strings.CutPrefix(v, s.prefix)
	if !ok || rest == "" {
		return version{}
	}
	seqText, setText, named := strings.Cut(rest, ".")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || seq > s.seq {
		return version{}
	}
	out := version{ours: true, seq: seq}
	if named {
		if out.set, err = strconv.ParseUint(setText, 10, 64); err != nil {
			return version{}
		}
	}
	return out
}
