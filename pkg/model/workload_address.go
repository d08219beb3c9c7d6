package model

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// workloadsByAddressKey keys the address index in Snapshot.Derived.
type workloadsByAddressKey struct{}

// WorkloadAt returns the workload (a running Pod, else a WorkloadEntry) at an IP address, or
// nil. Telemetry reads it to name the peer of a connection from its address, as Istio's
// metrics do for peers that exchanged no metadata. Two workloads at one address (a Pod and a
// WorkloadEntry, say) resolve to the first in namespace/name order, the Pod before the entry.
func (s *Snapshot) WorkloadAt(addr netip.Addr) *Workload {
	index := s.Derived(workloadsByAddressKey{}, func() any {
		m := map[netip.Addr]*Workload{}
		for _, w := range s.allWorkloads() {
			a, err := netip.ParseAddr(w.Address)
			if err != nil {
				continue // not scheduled, finished, or a DNS name
			}
			if prev := m[a]; prev == nil || prev.Kind != "Pod" && w.Kind == "Pod" {
				m[a] = w
			}
		}
		return m
	}).(map[netip.Addr]*Workload)
	return index[addr.Unmap()]
}

// Pod returns the Pod NAMESPACE/NAME, or nil: its owner references name its workload (a
// Deployment, say), which Workload does not carry.
func (s *Snapshot) Pod(namespace, name string) *corev1.Pod { return s.pods[namespace+"/"+name] }
