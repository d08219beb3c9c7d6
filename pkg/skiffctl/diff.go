package skiffctl

import (
	"fmt"
	"io"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// DiffTypes are the types --diff compares: what pilot serves over xDS (Envoy's bootstrap and
// static resources are not pilot's).
var DiffTypes = []string{Clusters, Listeners, Routes, Endpoints, Secrets, Extensions}

// DiffDumps is Diff of one type of pilot's dump and Envoy's, resources chosen by filter.
// Envoy dumps a load assignment for every cluster it has, EDS or not; only those of pilot's EDS
// clusters are compared (a cluster that differs shows under clusters).
func DiffDumps(w io.Writer, typ string, pilot, envoy *Dump, filter *Filter) (int, error) {
	a, b := filter.Select(pilot.Of(typ)), filter.Select(envoy.Of(typ))
	if typ == Extensions {
		// Envoy subscribes to an extension configuration only once a listener names it (the
		// network RBAC filters only for TCP chains): what pilot offers and no listener of the
		// Envoy names is not a difference.
		var listeners strings.Builder
		for _, r := range envoy.Of(Listeners) {
			listeners.Write(r.JSON)
		}
		have := map[string]bool{}
		for _, r := range b {
			have[r.Name] = true
		}
		a = slices.DeleteFunc(slices.Clone(a), func(r *Resource) bool {
			return !have[r.Name] && !strings.Contains(listeners.String(), `"`+r.Name+`"`)
		})
	}
	if typ == Endpoints {
		eds := map[string]bool{}
		for _, r := range pilot.Of(Clusters) {
			if c, ok := r.Message.(*clusterv3.Cluster); ok && c.GetType() == clusterv3.Cluster_EDS {
				eds[cmpOr(c.GetEdsClusterConfig().GetServiceName(), c.GetName())] = true
			}
		}
		for _, r := range a {
			eds[r.Name] = true
		}
		b = slices.DeleteFunc(slices.Clone(b), func(r *Resource) bool { return !eds[r.Name] })
	}
	return Diff(w, typ, a, b)
}

// Diff writes a unified diff, resource by resource, of the dynamic resources of type typ in
// pilot's dump (a) and Envoy's (b), and returns how many resources differ.
func Diff(w io.Writer, typ string, a, b []*Resource) (int, error) {
	byName := func(rs []*Resource) map[string]*Resource {
		out := map[string]*Resource{}
		for _, r := range rs {
			if !r.Static && r.State == "ACTIVE" {
				out[r.Name] = r
			}
		}
		return out
	}
	pilot, envoy := byName(a), byName(b)
	var names []string
	for n := range pilot {
		names = append(names, n)
	}
	for n := range envoy {
		if _, ok := pilot[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	differ := 0
	for _, n := range names {
		var left, right string
		var err error
		if r := pilot[n]; r != nil {
			if left, err = r.YAML(); err != nil {
				return differ, err
			}
		}
		if r := envoy[n]; r != nil {
			if right, err = r.YAML(); err != nil {
				return differ, err
			}
		}
		if left == right {
			continue
		}
		differ++
		fmt.Fprintf(w, "--- pilot %s/%s\n+++ envoy %s/%s\n", typ, n, typ, n)
		if pilot[n] == nil {
			fmt.Fprintf(w, "@@ only in Envoy @@\n")
		}
		if envoy[n] == nil {
			fmt.Fprintf(w, "@@ only in pilot @@\n")
		}
		writeUnified(w, splitLines(left), splitLines(right), 3)
	}
	return differ, nil
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// editOp is one line of an edit script: ' ' kept, '-' only in a, '+' only in b.
type editOp struct {
	kind byte
	line string
	ai   int // index in a (kept and '-') or where b's line goes
	bi   int
}

// editScript is a shortest edit script from a to b, by the longest common subsequence.
// Resources are at most some thousands of lines: the quadratic table is fine.
func editScript(a, b []string) []editOp {
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []editOp
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, editOp{' ', a[i], i, j})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			// Removals before additions, as diff -u prints them.
			ops = append(ops, editOp{'-', a[i], i, j})
			i++
		default:
			ops = append(ops, editOp{'+', b[j], i, j})
			j++
		}
	}
	return ops
}

// writeUnified writes the edit script from a to b as unified diff hunks with context lines.
func writeUnified(w io.Writer, a, b []string, context int) {
	ops := editScript(a, b)
	for start := 0; start < len(ops); {
		// Find the next change.
		first := start
		for first < len(ops) && ops[first].kind == ' ' {
			first++
		}
		if first == len(ops) {
			return
		}
		lo := max(first-context, start)
		// Extend the hunk while changes are within 2*context lines of each other.
		hi, kept := first, 0
		for k := first; k < len(ops); k++ {
			if ops[k].kind == ' ' {
				kept++
				if kept > 2*context {
					break
				}
				continue
			}
			kept, hi = 0, k
		}
		end := min(hi+context+1, len(ops))
		var aLines, bLines int
		for _, op := range ops[lo:end] {
			if op.kind != '+' {
				aLines++
			}
			if op.kind != '-' {
				bLines++
			}
		}
		fmt.Fprintf(w, "@@ -%d,%d +%d,%d @@\n", ops[lo].ai+1, aLines, ops[lo].bi+1, bLines)
		for _, op := range ops[lo:end] {
			fmt.Fprintf(w, "%c%s\n", op.kind, op.line)
		}
		start = end
	}
}
