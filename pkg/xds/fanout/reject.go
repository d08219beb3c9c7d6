package fanout

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
)

// When a client rejects (NACKs) an answer, the store finds the resources at fault and holds
// them, for that client, at the version it last accepted, while every other resource moves on:
//
//   - Envoy 1.40 names the listeners and clusters it fails to add ("Error adding/updating
//     listener(s) NAME: REASON", "Error adding/updating cluster(s) NAME: Invalid path: ..."),
//     and quotes an assignment that fails validation (`cluster_name: "NAME"`), so those names
//     come from error_detail. A route configuration's bad regex ("missing ]: [", "RE2 program
//     size of 1405 > max program size of 100"), an extension configuration's, a secret that does
//     not load ("Failed to load trusted CA certificates from <inline>") and any resource that
//     fails validation while the response is decoded ("Invalid duration: ...") are rejected
//     with the reason alone. A rejected answer that changed one resource is that one; one that
//     changed several is bisected: the client is served half of them at their new version and
//     the rest at their accepted one, and its next ACK or NACK says which half holds the fault.
//   - What a client is served differently is an overlay, kept by node ID, for the clients that
//     NACKed only: the store's state stays shared, and a client without an overlay costs one
//     map length check more per answer. Envoys differ (a port in use on one host, a file
//     present on one machine), so a rejection holds back nothing from the other clients of the
//     configuration; a rejection every Envoy of a configuration makes costs one NACK each.
//   - A rejected resource is tried again when its translation changes.

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

// overlay is what one client (a node ID) is served differently from the store: the resources
// it rejected, held at the version it accepted, and the bisection under way for it.
type overlay struct {
	node  string
	holds map[string]*hold
	trial *trial
	// retries counts, by name, the rejections of a translation held and tried again since
	// it last changed: each waits twice as long before the next try.
	retries map[string]int
}

// hold serves res instead of the store's want (nil: nothing). It stands only while the store
// serves want: a new translation replaces it. Once the resource is found at fault, rejection
// says so; holds of a bisection have none, and a released one serves want itself until the
// client has it.
type hold struct {
	res       *Resource
	want      *Resource
	seq       uint64 // when it last changed: state-of-the-world clients older than this lack it
	rejection *Rejection
}

// serve is what the client of ov is served of name.
func (ov *overlay) serve(name string, e *entry) *Resource {
	if ov != nil {
		if h, ok := ov.holds[name]; ok && h.want == e.res {
			return h.res
		}
	}
	return e.res
}

// overlayLocked is node's overlay, nil if it has none.
func (s *Store) overlayLocked(node string) *overlay {
	if len(s.overlays) == 0 {
		return nil
	}
	return s.overlays[node]
}

// trial is a bisection under way for one client: the fault is among suspects; tried, their
// first half, is served at its new version, and the other suspects and those set aside for
// later at their accepted version. sent is set once the client has been answered with the
// step: its next ACK or NACK is the verdict.
type trial struct {
	suspects []string
	tried    []string
	later    []string
	sent     bool
	// every name in the trial: its new version, its accepted one (nil: none) and the
	// HeldVersion of that.
	want   map[string]*Resource
	held   map[string]*Resource
	heldIn map[string]string
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

// nackLocked handles node's NACK of an answer at rejectedSeq. The client holds from (the
// state-of-the-world version it accepted; ours is false for delta clients and for clients new
// to the store), and asked for set (nil: wildcard) or, for delta clients, was sent these
// resources. It reports whether node's overlay changed; then the caller answers the client.
func (s *Store) nackLocked(node, msg string, from version, rejectedSeq uint64, set *nameSet, sent map[string]string) bool {
	ov := s.overlayLocked(node)
	if ov != nil && ov.trial != nil {
		s.trialFailedLocked(ov, msg)
		return true
	}
	cands := s.candidatesLocked(ov, from, rejectedSeq, set, sent)
	if len(cands) == 0 {
		return false
	}
	if ov == nil {
		ov = &overlay{node: node, holds: map[string]*hold{}}
		if s.overlays == nil {
			s.overlays = map[string]*overlay{}
		}
		s.overlays[node] = ov
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
		for _, c := range cands {
			if slices.Contains(named, c.name) {
				s.rejectLocked(ov, c, msg)
			}
		}
		return true
	}
	t := &trial{want: map[string]*Resource{}, held: map[string]*Resource{}, heldIn: map[string]string{}}
	for _, c := range cands {
		t.suspects = append(t.suspects, c.name)
		t.want[c.name], t.held[c.name], t.heldIn[c.name] = c.rejected, c.held, c.heldIn
	}
	ov.trial = t
	s.trialStepLocked(ov)
	return true
}

// candidatesLocked lists the resources a rejected answer changed, sorted by name.
func (s *Store) candidatesLocked(ov *overlay, from version, rejectedSeq uint64, set *nameSet, sent map[string]string) []candidate {
	var out []candidate
	consider := func(name string, e *entry) {
		if ov != nil {
			if h, ok := ov.holds[name]; ok && h.want == e.res && h.rejection != nil {
				return // held already: what was rejected is the held version, which is not retried
			}
		}
		c := candidate{name: name, rejected: e.res}
		if sent != nil {
			// Delta: the answer sent this hash; the held version is the one served before it.
			if e.res.hash != sent[name] {
				return // changed since: the newer version was not tried yet
			}
			if e.hadPrev && e.prev != nil {
				c.held, c.heldIn = e.prev, e.prev.hash
			}
			out = append(out, c)
			return
		}
		if rejected, known := e.asOf(rejectedSeq); !known || rejected != e.res {
			return // changed since the rejected answer, or absent from it
		}
		if from.ours {
			held, known := e.asOf(from.seq)
			if !known {
				held = e.prev // the client is further behind: the latest version before
			}
			if held != nil && held.hash == e.res.hash {
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

// rejectLocked holds c for ov's client at its accepted version, from s.seq, and records the
// rejection.
func (s *Store) rejectLocked(ov *overlay, c candidate, msg string) {
	r := &Rejection{Name: c.name, Error: msg, HeldVersion: c.heldIn, Proxy: ov.node, At: time.Now()}
	h := &hold{res: c.held, want: c.rejected, seq: s.seq, rejection: r}
	ov.holds[c.name] = h
	if s.observe != nil {
		s.observe(*r)
	}
	// A rejection may be transient (a port another process held for a moment, a file not yet
	// written): the held resource is tried again after nackRetry, then after twice as long
	// each time it is rejected again, up to maxHoldRetry. A deterministic rejection costs a
	// NACK per interval; a transient one heals without a change.
	if ov.retries == nil {
		ov.retries = map[string]int{}
	}
	wait := nackRetry << min(ov.retries[c.name], 16)
	ov.retries[c.name]++
	time.AfterFunc(min(wait, maxHoldRetry), func() { s.retryHold(ov.node, c.name, h) })
}

// maxHoldRetry bounds the wait before a held resource is tried again.
const maxHoldRetry = 5 * time.Minute

// retryHold serves node the version it rejected again, if h still holds it, and answers the
// client's waiting watch.
func (s *Store) retryHold(node, name string, h *hold) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ov := s.overlayLocked(node)
	if ov == nil || ov.holds[name] != h {
		return // translated again, or forgotten
	}
	s.seq++
	ov.holds[name] = &hold{res: h.want, want: h.want, seq: s.seq}
	for w := range s.sotw {
		if w.node() == node {
			if res := s.overlayAnswerLocked(ov, w.set, w.from, nil); s.wildcard || len(res) > 0 {
				s.respondLocked(w, res)
			}
		}
	}
	for w := range s.delta {
		if w.node() == node {
			if resp := s.deltaAnswerLocked(w, []string{name}, nil, true); resp != nil {
				delete(s.delta, w)
				w.ch <- resp
			}
		}
	}
}

// trialStepLocked serves ov's client the first half of the suspects at their new version and
// the rest at their accepted one.
func (s *Store) trialStepLocked(ov *overlay) {
	t := ov.trial
	t.tried = t.suspects[:(len(t.suspects)+1)/2]
	t.sent = false
	s.seq++
	for _, name := range slices.Concat(t.suspects, t.later) {
		serve := t.held[name]
		if slices.Contains(t.tried, name) {
			serve = t.want[name]
		}
		if h := ov.holds[name]; h == nil || h.res != serve {
			ov.holds[name] = &hold{res: serve, want: t.want[name], seq: s.seq}
		}
	}
}

// trialFailedLocked: the step was rejected, so the fault is among the tried; the other
// suspects are tried later.
func (s *Store) trialFailedLocked(ov *overlay, msg string) {
	t := ov.trial
	t.later = append(t.later, t.suspects[len(t.tried):]...)
	t.suspects = slices.Clone(t.tried)
	if len(t.suspects) > 1 {
		s.trialStepLocked(ov)
		return
	}
	name := t.suspects[0]
	s.seq++
	s.rejectLocked(ov, candidate{name: name, rejected: t.want[name], held: t.held[name], heldIn: t.heldIn[name]}, msg)
	delete(t.want, name)
	t.suspects, t.later = t.later, nil
	if len(t.suspects) > 0 {
		s.trialStepLocked(ov)
		return
	}
	ov.trial = nil
}

// trialPassedLocked: the step was accepted, so the tried are not at fault (their holds now
// serve their new version).
func (s *Store) trialPassedLocked(ov *overlay) {
	t := ov.trial
	for _, name := range t.tried {
		delete(t.want, name)
	}
	t.suspects = t.suspects[len(t.tried):]
	if len(t.suspects) == 0 {
		t.suspects, t.later = t.later, nil
	}
	if len(t.suspects) == 0 {
		ov.trial = nil
		return
	}
	s.trialStepLocked(ov)
}

// verdictLocked takes a request of node as the verdict on the bisection step it was sent, if
// there is one; it reports whether the overlay changed.
func (s *Store) verdictLocked(node string, answersSomething bool, nack bool, msg string) bool {
	ov := s.overlayLocked(node)
	if ov == nil || ov.trial == nil || !ov.trial.sent || !answersSomething {
		return false
	}
	if nack {
		s.trialFailedLocked(ov, msg)
	} else {
		s.trialPassedLocked(ov)
	}
	return true
}

// retranslatedLocked drops the holds of resources whose translation changed (changed and
// removed names), and ends the bisections they were part of: the new versions are tried as
// any change is. Holds released that way serve the store's version from s.seq.
func (s *Store) retranslatedLocked(names []string) {
	for node, ov := range s.overlays {
		for _, name := range names {
			delete(ov.holds, name)
			delete(ov.retries, name)
			if ov.trial != nil && ov.trial.has(name) {
				for n := range ov.trial.want {
					if h, ok := ov.holds[n]; ok && h.rejection == nil {
						ov.holds[n] = &hold{res: h.want, want: h.want, seq: s.seq}
					}
				}
				ov.trial = nil
			}
		}
		if len(ov.holds) == 0 && ov.trial == nil && len(ov.retries) == 0 {
			delete(s.overlays, node)
		}
	}
}

// pruneLocked forgets the holds of ov that serve the store's own version once the client has
// it: a state-of-the-world client that accepted from, or a delta client that holds returned.
func (s *Store) pruneLocked(ov *overlay, from version, returned map[string]string) {
	for name, h := range ov.holds {
		if h.rejection != nil || h.res != h.want || (ov.trial != nil && ov.trial.has(name)) {
			continue
		}
		if (returned != nil && returned[name] == h.want.hash) || (returned == nil && from.ours && from.seq >= h.seq) {
			delete(ov.holds, name)
			delete(ov.retries, name) // accepted: a later rejection waits nackRetry again
		}
	}
	if len(ov.holds) == 0 && ov.trial == nil && len(ov.retries) == 0 {
		delete(s.overlays, ov.node)
	}
}

// overlayAnswerLocked is what the client of ov lacks, as it is served: for a new request
// (changed nil) everything since from, else the changed names; for both, the names whose
// hold changed since from.
func (s *Store) overlayAnswerLocked(ov *overlay, set *nameSet, from version, changed []string) []*anypb.Any {
	var names []string
	holdChanged := func(name string) bool {
		h, ok := ov.holds[name]
		return ok && (!from.ours || h.seq > from.seq)
	}
	switch {
	case s.wildcard:
		names = slices.Sorted(maps.Keys(s.entries))
	case changed != nil:
		for name := range set.names {
			if _, ok := s.entries[name]; ok && (slices.Contains(changed, name) || holdChanged(name)) {
				names = append(names, name)
			}
		}
	default:
		var before *nameSet
		if from.ours && from.set != 0 {
			before = s.sets.byID[from.set]
		}
		for name := range set.names {
			e, ok := s.entries[name]
			if ok && (!from.ours || before == nil || e.seq > from.seq || !before.has(name) || holdChanged(name)) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	res := make([]*anypb.Any, 0, len(names))
	for _, name := range names {
		if r := ov.serve(name, s.entries[name]); r != nil {
			res = append(res, r.any)
		}
	}
	return res
}

// Rejections lists the resources the store holds for node at their last accepted version,
// by name; all nodes' if node is empty.
func (s *Store) Rejections(node string) []Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Rejection
	for n, ov := range s.overlays {
		if node != "" && n != node {
			continue
		}
		for _, h := range ov.holds {
			if h.rejection != nil {
				out = append(out, *h.rejection)
			}
		}
	}
	slices.SortFunc(out, func(a, b Rejection) int {
		return strings.Compare(a.Proxy+"\x00"+a.Name, b.Proxy+"\x00"+b.Name)
	})
	return out
}

// Forget drops what the store holds for node: its last stream ended. An Envoy that comes back
// with the rejected version's predecessor rejects the new one again, and is held again.
func (s *Store) Forget(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.overlays, node)
}

// Observe has fn called, under the store's lock, with every rejection the store records.
func (s *Store) Observe(fn func(Rejection)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observe = fn
}

// TypeURL is the store's resource type.
func (s *Store) TypeURL() string { return s.typeURL }
