package fanout

import (
	"slices"
	"testing"
)

// TestSetTableShortcut: a list seen before (the very slice listCache hands out again) finds its
// set by identity; another slice with the same names, in any order, finds the same set by its
// names; a list that only shares a prefix's backing array (a different length) does not.
func TestSetTableShortcut(t *testing.T) {
	table := newSetTable()
	list := []string{"a", "b", "c"}
	first := table.intern(list)
	if again := table.intern(list); again != first {
		t.Fatal("the same list interned twice gave two sets")
	}
	if len(table.byList) != 1 {
		t.Fatalf("%d list identities remembered, want 1", len(table.byList))
	}
	if other := table.intern([]string{"c", "a", "b"}); other != first {
		t.Fatal("the same names in another slice and order gave another set")
	}
	prefix := table.intern(list[:2])
	if prefix == first || !prefix.has("a") || prefix.has("c") {
		t.Fatalf("a prefix of the list was taken for the list: %v", prefix.names)
	}
	if empty := table.intern(nil); empty == first || len(empty.names) != 0 {
		t.Fatal("the empty list was taken for another")
	}
	// Copies of one list, as a client could send without end, keep a bounded number alive.
	for range 2 * maxNameSets {
		if table.intern(slices.Clone(list)) != first {
			t.Fatal("a copy of the list gave another set")
		}
	}
	if len(table.byList) > maxNameSets || table.listNames > maxSetNames {
		t.Fatalf("%d list identities (%d names) remembered, want at most %d", len(table.byList), table.listNames, maxNameSets)
	}
}
