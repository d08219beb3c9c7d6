package fanout

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// When a client rejects (NACKs) an answer, the store finds the resources at fault and holds
// them at the version the client last accepted, while every other resource moves on:
//
//   - Envoy names the listeners and clusters it rejects ("Error adding/updating listener(s)
//     NAME: REASON"), so for LDS and CDS the names come from error_detail. Its route
//     configurations, assignments, secrets and extension configurations are rejected with the
//     reason alone; a rejected answer that changed one of them is that one, and one that changed
//     several is bisected: the store serves half of them at their new version and holds the
//     other half, and the client's next ACK or NACK says which half holds the fault.
//   - The hold is the store's, so every client that shares the store (the proxies of one
//     configuration key) is served the held version: they are sent the same bytes, and Envoys of
//     one version reject the same bytes. The client that rejected is named in the rejection.
//   - A rejected resource is tried again when its translation changes.
//
// Nothing of this is on the path of an ACK: a store without rejections or a bisection does
// one nil check more per answer.

// Rejection is a resource a client rejected, served at the version it last accepted.
type Rejection struct {
	Name  string
	Error string
	// HeldVersion is the version the rejecting client accepted the held resource in (its
	// content hash for delta clients); empty when it never accepted one, and the resource is
	// held back altogether.
	HeldVersion string
	// Proxy is the node ID of the client whose NACK named it.
	Proxy string
	At    time.Time
}

// rejection is a Rejection in the store: rejected is the translation that was refused, which
// the entry keeps as its want while its res is the held version.
type rejection struct {
	Rejection
	rejected *Resource
}

// NackInfo is what the stream knows about a NACK that the store cannot read from the request:
// the version of the answer it rejects (the request carries the version the client last
// accepted), and for delta streams the resources that answer sent, with their hashes.
type NackInfo struct {
	RejectedVersion string
	Sent            map[string]string
}

// nackInfos holds NackInfo between the stream's callback and the store's watch, as
// StashNames does for names. Only NACKs are noted, so it stays empty.
var nackInfos sync.Map // request → NackInfo

// NoteNack tells the store that will see req (a NACK) what it rejected.
func NoteNack(req any, info NackInfo) { nackInfos.Store(req, info) }

func takeNack(req any) (NackInfo, bool) {
	info, ok := nackInfos.LoadAndDelete(req)
	if !ok {
		return NackInfo{}, false
	}
	return info.(NackInfo), true
}

// DropNack forgets what NoteNack noted for a request that never reached a store.
func DropNack(req any) { nackInfos.Delete(req) }

// namesInError returns the candidates that Envoy's error_detail names as the resources at
// fault. Envoy's LDS and CDS list them as "NAME: REASON", after "Error adding/updating
// listener(s) " or "cluster(s) ", separated by newlines or ", "; other messages quote names.
// A bare name elsewhere in the text is not taken: route configurations are named by port
// numbers, which reasons mention too.
func namesInError(msg string, candidates []string) []string {
	var out []string
	for _, name := range candidates {
		if name == "" {
			continue
		}
		for _, form := range []string{"'" + name + "'", "\"" + name + "\""} {
			if strings.Contains(msg, form) {
				out = append(out, name)
				goto next
			}
		}
		for i := 0; ; {
			j := strings.Index(msg[i:], name+": ")
			if j < 0 {
				break
			}
			at := i + j
			if at == 0 || strings.HasSuffix(msg[:at], "(s) ") || strings.HasSuffix(msg[:at], ", ") || strings.HasSuffix(msg[:at], "\n") {
				out = append(out, name)
				break
			}
			i = at + 1
		}
	next:
	}
	return out
}

// trial is a bisection under way: the fault is among suspects; tried, their first half, is
// served at its new version since seq, and the other suspects and those set aside for later
// are held at their accepted version.
type trial struct {
	seq      uint64
	suspects []string
	tried    []string
	later    []string
	err      string
	proxy    string
	// every name in the trial: its new version, its accepted one (nil: none) and the
	// HeldVersion of that.
	want   map[string]*Resource
	held   map[string]*Resource
	heldIn map[string]string
}

// serving is the version to serve of a name in the trial.
func (t *trial) serving(name string) *Resource {
	if slices.Contains(t.tried, name) {
		return t.want[name]
	}
	return t.held[name]
}

func (t *trial) has(name string) bool {
	_, ok := t.want[name]
	return ok
}

// candidate is a resource that changed in a rejected answer: its new and accepted versions.
type candidate struct {
	name     string
	rejected *Resource
	held     *Resource
	heldIn   string
}

// nackLocked handles a NACK of an answer at rejectedSeq by a client that holds from (the
// state-of-the-world version it accepted; ours is false for delta clients and for clients new
// to the store), whose answer named set (nil: wildcard) or, for delta clients, sent these
// resources. It reports whether the store changed (then the parked watches were answered).
func (s *Store) nackLocked(proxy, msg string, from version, rejectedSeq uint64, set *nameSet, sent map[string]string) bool {
	if t := s.trial; t != nil {
		if rejectedSeq < t.seq {
			return false // an answer from before the trial step: the step's own answer is coming
		}
		s.trialFailedLocked(msg)
		return true
	}
	cands := s.candidatesLocked(from, rejectedSeq, set, sent)
	if len(cands) == 0 {
		return false
	}
	names := make([]string, len(cands))
	for i, c := range cands {
		names[i] = c.name
	}
	named := namesInError(msg, names)
	if len(named) == 0 && len(cands) == 1 {
		named = names
	}
	if len(named) > 0 {
		s.seq++
		var changed []string
		for _, c := range cands {
			if slices.Contains(named, c.name) {
				s.holdLocked(c, msg, proxy)
				changed = append(changed, c.name)
			}
		}
		s.changedLocked(changed, nil, false)
		return true
	}
	t := &trial{err: msg, proxy: proxy, want: map[string]*Resource{}, held: map[string]*Resource{}, heldIn: map[string]string{}}
	for _, c := range cands {
		t.suspects = append(t.suspects, c.name)
		t.want[c.name], t.held[c.name], t.heldIn[c.name] = c.rejected, c.held, c.heldIn
	}
	s.trial = t
	s.trialStepLocked()
	return true
}

// candidatesLocked lists the resources a rejected answer changed, sorted by name.
func (s *Store) candidatesLocked(from version, rejectedSeq uint64, set *nameSet, sent map[string]string) []candidate {
	var out []candidate
	consider := func(name string, e *entry) {
		if _, held := s.rejected[name]; held || e.res == nil {
			return // held already: what was rejected is the held version, which is not retried
		}
		c := candidate{name: name}
		if sent != nil {
			// Delta: the answer sent this hash; the held version is the one served before it.
			if e.res.hash != sent[name] {
				return // changed since: the newer version was not tried yet
			}
			c.rejected = e.res
			if e.hadPrev && e.prev != nil {
				c.held, c.heldIn = e.prev, e.prev.hash
			}
			out = append(out, c)
			return
		}
		rejected, known := e.asOf(rejectedSeq)
		if !known || rejected != e.res {
			return // changed since the rejected answer, or absent from it
		}
		c.rejected = rejected
		if from.ours {
			held, known := e.asOf(from.seq)
			if !known {
				held = e.prev // the client is further behind: the latest version before
			}
			if held != nil && held.hash == rejected.hash {
				return // the client accepted this very version: not at fault
			}
			c.held = held
			if held != nil {
				c.heldIn = from.format(s.prefix)
			}
		}
		out = append(out, c)
	}
	switch {
	case sent != nil:
		for name := range sent {
			if e, ok := s.entries[name]; ok {
				consider(name, e)
			}
		}
	case set != nil:
		for name := range set.names {
			if e, ok := s.entries[name]; ok {
				consider(name, e)
			}
		}
	default:
		for name, e := range s.entries {
			consider(name, e)
		}
	}
	slices.SortFunc(out, func(a, b candidate) int { return strings.Compare(a.name, b.name) })
	return out
}

// holdLocked makes c's entry serve its held version from s.seq and records the rejection.
func (s *Store) holdLocked(c candidate, msg, proxy string) {
	if s.rejected == nil {
		s.rejected = map[string]*rejection{}
	}
	r := &rejection{rejected: c.rejected, Rejection: Rejection{
		Name: c.name, Error: msg, HeldVersion: c.heldIn, Proxy: proxy, At: time.Now(),
	}}
	s.rejected[c.name] = r
	s.entries[c.name] = s.entries[c.name].next(c.held, s.seq)
	if s.observe != nil {
		s.observe(r.Rejection)
	}
}

// trialStepLocked serves the first half of the suspects at their new version and holds the
// rest, as one change.
func (s *Store) trialStepLocked() {
	t := s.trial
	t.tried = t.suspects[:(len(t.suspects)+1)/2]
	s.seq++
	t.seq = s.seq
	var changed []string
	for _, name := range slices.Concat(t.suspects, t.later) {
		e := s.entries[name]
		if serve := t.serving(name); e.res != serve {
			s.entries[name] = e.next(serve, s.seq)
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	s.changedLocked(changed, nil, false)
}

// trialFailedLocked: the answer with tried was rejected, so the fault is among them; the other
// suspects are tried later.
func (s *Store) trialFailedLocked(msg string) {
	t := s.trial
	t.err = msg
	t.later = append(t.later, t.suspects[len(t.tried):]...)
	t.suspects = slices.Clone(t.tried)
	if len(t.suspects) > 1 {
		s.trialStepLocked()
		return
	}
	name := t.suspects[0]
	s.seq++
	s.holdLocked(candidate{name: name, rejected: t.want[name], held: t.held[name], heldIn: t.heldIn[name]}, msg, t.proxy)
	delete(t.want, name)
	t.suspects, t.later = t.later, nil
	if len(t.suspects) > 0 {
		s.trialStepLocked() // also sends the hold
		return
	}
	s.trial = nil
	s.changedLocked([]string{name}, nil, false)
}

// trialPassedLocked: the answer with tried was accepted, so they are not at fault.
func (s *Store) trialPassedLocked() {
	t := s.trial
	for _, name := range t.tried {
		delete(t.want, name)
	}
	t.suspects = t.suspects[len(t.tried):]
	if len(t.suspects) == 0 {
		t.suspects, t.later = t.later, nil
	}
	if len(t.suspects) == 0 {
		s.trial = nil
		return
	}
	s.trialStepLocked()
}

// trialAcceptedLocked reports whether an ACK of from by a client asking for set (nil:
// wildcard) accepted the trial's tried resources.
func (s *Store) trialAcceptedLocked(from version, set *nameSet) bool {
	t := s.trial
	if !from.ours || from.seq < t.seq {
		return false
	}
	if set != nil {
		for _, name := range t.tried {
			if !set.has(name) {
				return false
			}
		}
	}
	return true
}

// trialAcceptedDeltaLocked is trialAcceptedLocked for a delta client's ACK: it holds the
// tried resources at the version the trial serves.
func (s *Store) trialAcceptedDeltaLocked(returned map[string]string) bool {
	for _, name := range s.trial.tried {
		if returned[name] != s.entries[name].res.hash {
			return false
		}
	}
	return true
}

// endTrialLocked ends a trial when one of its resources is translated again: every resource
// of the trial is served at its new version (changed lists those whose served version
// changes), and a client that rejects them starts another.
func (s *Store) endTrialLocked() (changed []string) {
	t := s.trial
	s.trial = nil
	for name, want := range t.want {
		if e, ok := s.entries[name]; ok && e.res != want {
			s.entries[name] = e.next(want, s.seq)
			changed = append(changed, name)
		}
	}
	return changed
}

// wantLocked is the translation of an entry's resource: what it serves, unless held.
func (s *Store) wantLocked(name string, e *entry) *Resource {
	if r, ok := s.rejected[name]; ok {
		return r.rejected
	}
	if s.trial != nil && s.trial.has(name) {
		return s.trial.want[name]
	}
	return e.res
}

// Rejections lists the resources the store holds at their last accepted version, by name.
func (s *Store) Rejections() []Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Rejection, 0, len(s.rejected))
	for _, name := range slices.Sorted(maps.Keys(s.rejected)) {
		out = append(out, s.rejected[name].Rejection)
	}
	return out
}

// Observe has fn called, under the store's lock, with every rejection the store records.
func (s *Store) Observe(fn func(Rejection)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observe = fn
}

// TypeURL is the store's resource type.
func (s *Store) TypeURL() string { return s.typeURL }
