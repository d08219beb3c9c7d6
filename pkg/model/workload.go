package model

import (
	"fmt"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
)

// Workload is what a proxy's node ID (POD.NAMESPACE) names: a Kubernetes Pod or, outside
// Kubernetes, a WorkloadEntry. Its address and service account decide the identity a proxy
// may hold; its labels decide which Gateways, Sidecars and policies apply to it. A Pod wins
// over a WorkloadEntry of the same name.
type Workload struct {
	Kind      string // "Pod" or "WorkloadEntry"
	Namespace string
	Name      string
	// Address is the Pod IP or the WorkloadEntry address; empty for a Pod not yet scheduled
	// or no longer running.
	Address string
	Labels  map[string]string
	// ServiceAccount is the Pod's (Kubernetes' "default" when it names none) or the
	// WorkloadEntry's (empty when it names none).
	ServiceAccount string
}

// Source is KIND/NAMESPACE/NAME, the form Endpoint.Source uses for the workload's endpoints.
func (w *Workload) Source() string { return fmt.Sprintf("%s/%s/%s", w.Kind, w.Namespace, w.Name) }

// Workload returns the workload NAMESPACE/NAME, or nil.
func (s *Snapshot) Workload(namespace, name string) *Workload {
	if pod := s.pods[namespace+"/"+name]; pod != nil {
		return workloadFromPod(pod)
	}
	if we := s.workloads[namespace+"/"+name]; we != nil {
		return workloadFromEntry(we)
	}
	return nil
}

func workloadFromPod(pod *corev1.Pod) *Workload {
	w := &Workload{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, Address: pod.Status.PodIP,
		Labels: pod.Labels, ServiceAccount: podServiceAccount(pod)}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// Its containers have stopped, and its IP may already belong to another Pod.
		w.Address = ""
	}
	return w
}

func workloadFromEntry(we *networkingv1.WorkloadEntry) *Workload {
	return &Workload{Kind: "WorkloadEntry", Namespace: we.Namespace, Name: we.Name, Address: we.Spec.GetAddress(),
		Labels: we.Spec.GetLabels(), ServiceAccount: we.Spec.GetServiceAccount()}
}

// ResolveProxy returns the proxy as translation must see it: when its node ID names a Pod,
// with the Pod's labels in place of whatever the node metadata claimed, because in Kubernetes
// the API server, not the proxy, says what a workload is.
func (s *Snapshot) ResolveProxy(p *Proxy) *Proxy {
	pod := s.pods[p.Namespace+"/"+p.Name]
	if pod == nil {
		return p
	}
	resolved := *p
	resolved.Labels = pod.Labels
	return &resolved
}

// MayHoldIdentity reports whether a workload certificate can ever be issued to the proxy,
// judged from the snapshot alone: its node ID names a workload with a service account, a Pod
// (every Pod runs as one, Kubernetes' "default" at least) or a WorkloadEntry that names one.
// The SDS check (pkg/xds) may still refuse such a proxy for connecting from another address,
// which translation cannot see. Translation reads this fact: a proxy that can never hold a
// certificate is given no mTLS that would wait for one (see package translate).
func (s *Snapshot) MayHoldIdentity(p *Proxy) bool {
	if s.pods[p.Namespace+"/"+p.Name] != nil {
		return true
	}
	we := s.workloads[p.Namespace+"/"+p.Name]
	return we != nil && we.Spec.GetServiceAccount() != ""
}

// MissingIdentity says why MayHoldIdentity is false, for a log line; "" when it is true.
func (s *Snapshot) MissingIdentity(p *Proxy) string {
	if s.MayHoldIdentity(p) {
		return ""
	}
	if s.workloads[p.Namespace+"/"+p.Name] == nil {
		return fmt.Sprintf("no Pod or WorkloadEntry named %s in namespace %s", p.Name, p.Namespace)
	}
	return fmt.Sprintf("WorkloadEntry %s/%s names no serviceAccount", p.Namespace, p.Name)
}
