package model

import (
	"fmt"
	"net/netip"
	"regexp"

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

// ResolveProxy returns the proxy as translation must see it: when its node ID names a workload
// (Workload: a Pod, else a WorkloadEntry), with the workload's labels in place of whatever the
// node metadata claimed, because the API server or the configuration, not the proxy, says what
// a workload is. A proxy that names none keeps the labels it was given (node metadata LABELS,
// read in folder mode only).
func (s *Snapshot) ResolveProxy(p *Proxy) *Proxy {
	key := p.Namespace + "/" + p.Name
	var labels map[string]string
	if pod := s.pods[key]; pod != nil {
		labels = pod.Labels
	} else if we := s.workloads[key]; we != nil {
		labels = we.Spec.GetLabels()
	} else {
		return p
	}
	resolved := *p
	resolved.Labels = labels
	return &resolved
}

// CanHoldIdentity reports whether a proxy whose node ID names the workload can ever be granted
// its workload certificate (SDS `default`), judged from the workload alone: pilot grants it
// only for the workload's service account, to a stream from the workload's IP address
// (pkg/xds/identity.go). A Pod always has a service account (Kubernetes' "default" at least)
// and its sidecar runs only once the Pod has its IP; a WorkloadEntry needs a serviceAccount and
// an IP address (a DNS name is no source address). nil (no workload) cannot. The SDS check may
// still refuse a proxy connecting from another address, which translation cannot see.
func (w *Workload) CanHoldIdentity() bool {
	switch {
	case w == nil || w.ServiceAccount == "":
		return false
	case w.Kind == "Pod":
		return true
	}
	_, err := netip.ParseAddr(w.Address)
	return err == nil
}

// MayHoldIdentity reports whether the workload the proxy's node ID names can hold a workload
// certificate (Workload.CanHoldIdentity). Translation reads this fact: a proxy that can never
// hold one is given no mTLS that would wait for it (see package translate).
func (s *Snapshot) MayHoldIdentity(p *Proxy) bool {
	return s.Workload(p.Namespace, p.Name).CanHoldIdentity()
}

// MissingIdentity says why MayHoldIdentity is false, for a log line; "" when it is true.
func (s *Snapshot) MissingIdentity(p *Proxy) string {
	w := s.Workload(p.Namespace, p.Name)
	switch {
	case w.CanHoldIdentity():
		return ""
	case w == nil:
		return fmt.Sprintf("no Pod or WorkloadEntry named %s in namespace %s", p.Name, p.Namespace)
	case w.ServiceAccount == "":
		return fmt.Sprintf("WorkloadEntry %s/%s names no serviceAccount", p.Namespace, p.Name)
	}
	return fmt.Sprintf("WorkloadEntry %s/%s has no IP address (%q), which pilot could check a proxy's connection against", p.Namespace, p.Name, w.Address)
}

// deploymentPod matches the names Kubernetes gives Deployment pods:
// NAME-<pod-template-hash>-<5 random>. Both suffixes are drawn from the alphabet of
// k8s.io/apimachinery's rand.SafeEncodeString, which has no vowels, so ordinary words in a
// workload name are not mistaken for them.
var deploymentPod = regexp.MustCompile(`^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$`)

// WorkloadNameOf guesses the workload a pod belongs to from its name alone, as Istio's agent
// names a proxy when it knows nothing else: a Deployment's generated suffixes are dropped
// (reviews-v1-7f99b6d4c5-x2lqp is reviews-v1); any other name is kept whole.
func WorkloadNameOf(pod string) string {
	if m := deploymentPod.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	return pod
}
