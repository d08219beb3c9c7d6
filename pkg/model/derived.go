package model

// Derived returns what build makes for key, building it once per snapshot: translation keeps
// here what depends on the snapshot's objects alone and not on the proxy (the route metadata
// of a VirtualService's rules, say), so that every proxy translated from one snapshot shares
// one copy instead of allocating its own. key must be comparable; the value must never be
// modified, as it is shared. Two goroutines may both build a missing value; one is kept.
func (s *Snapshot) Derived(key any, build func() any) any {
	if v, ok := s.derived.Load(key); ok {
		return v
	}
	v, _ := s.derived.LoadOrStore(key, build())
	return v
}
