package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

// The generated folder must be what pilot accepts: its own loader (strict decoding and
// validation) and model analysis find nothing wrong, before and after changes.
func TestGeneratedMeshLoadsInPilot(t *testing.T) {
	dir := t.TempDir()
	m, err := GenerateMesh(dir, 25)
	if err != nil {
		t.Fatal(err)
	}
	loader := config.NewLoader(dir)
	load := func(when string) *config.Set {
		t.Helper()
		set, errs := loader.Load()
		for _, e := range errs {
			t.Errorf("%s: pilot's loader: %v", when, e)
		}
		if got := len(set.ServiceEntries); got != 25 {
			t.Errorf("%s: %d ServiceEntries, want 25", when, got)
		}
		if len(set.DestinationRules) != 25 || len(set.VirtualServices) != 25 {
			t.Errorf("%s: %d DestinationRules and %d VirtualServices, want 25 each", when, len(set.DestinationRules), len(set.VirtualServices))
		}
		for _, w := range model.Build(set).Warnings() {
			t.Errorf("%s: analysis warning: %v", when, w)
		}
		return set
	}
	load("generated")
	if err := WritePolicies(dir, 12); err != nil {
		t.Fatal(err)
	}
	if got := len(load("with policies").AuthorizationPolicies); got != 12 {
		t.Errorf("%d AuthorizationPolicies, want one per workload (12)", got)
	}

	if err := m.SetWeights(3, 80, 20); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("10.128.0.7")
	if err := m.SetEndpointV1(7, addr); err != nil {
		t.Fatal(err)
	}
	set := load("changed")
	for _, vs := range set.VirtualServices {
		if vs.Name != "svc-3" {
			continue
		}
		if w := vs.Spec.Http[0].Route; w[0].Weight != 80 || w[1].Weight != 20 {
			t.Errorf("svc-3 weights after SetWeights: %d/%d, want 80/20", w[0].Weight, w[1].Weight)
		}
	}
	for _, se := range set.ServiceEntries {
		if se.Name == "svc-7" && se.Spec.Endpoints[0].Address != addr.String() {
			t.Errorf("svc-7 v1 endpoint after SetEndpointV1: %s, want %s", se.Spec.Endpoints[0].Address, addr)
		}
	}
	// A change leaves no temporary file behind.
	entries, err := os.ReadDir(filepath.Join(dir, "ns-3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name()[0] == '.' {
			t.Errorf("leftover %s", e.Name())
		}
	}
}

func TestMeshNames(t *testing.T) {
	if got, want := serviceHost(13), "svc-13.ns-3.svc.cluster.local"; got != want {
		t.Errorf("serviceHost(13) = %s, want %s", got, want)
	}
	if got, want := subsetCluster(13, "v1"), "outbound|8080|v1|svc-13.ns-3.svc.cluster.local"; got != want {
		t.Errorf("subsetCluster = %s, want %s", got, want)
	}
	if got, want := endpointAddr(64, 300), netip.MustParseAddr("10.64.1.44"); got != want {
		t.Errorf("endpointAddr(64, 300) = %s, want %s", got, want)
	}
}

func TestPercentileAndPick(t *testing.T) {
	var lat []int
	for i := 1; i <= 200; i++ {
		lat = append(lat, i)
	}
	s := statsOf(durations(lat), 250)
	if s.P50 != 100 || s.P99 != 198 || s.Max != 200 || s.Count != 200 || s.Expected != 250 {
		t.Errorf("statsOf 1..200 ms: %+v", s)
	}
	n := 0
	for j := range 20 {
		if pick(j, 0.25) {
			n++
		}
	}
	if n != 5 {
		t.Errorf("pick(·, 0.25) chose %d of 20, want 5", n)
	}
	if got := thousands(1234567); got != "1,234,567" {
		t.Errorf("thousands = %s", got)
	}
}
