package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
)

// Besides Istio's kinds, a Set holds the Kubernetes objects that describe the mesh: Namespaces,
// Services, EndpointSlices and Pods (the service registry and the workloads proxies run in),
// and Secrets (gateway credentials). In Kubernetes mode they come from informers; in folder
// mode from files, so that `kubectl get ... -o yaml` of a cluster can be translated offline.
// They decode strictly into the k8s.io/api types, like the API server would read them.

// The Kubernetes kinds a Set holds.
const (
	secretKind        = "Secret"
	serviceKind       = "Service"
	podKind           = "Pod"
	namespaceKind     = "Namespace"
	endpointSliceKind = "EndpointSlice"
	listKind          = "List"
)

// kubeKinds maps the accepted apiVersion/kind of each Kubernetes kind to a constructor.
var kubeKinds = map[schema.GroupVersionKind]func() Object{
	{Version: "v1", Kind: secretKind}:                                   func() Object { return &corev1.Secret{} },
	{Version: "v1", Kind: serviceKind}:                                  func() Object { return &corev1.Service{} },
	{Version: "v1", Kind: podKind}:                                      func() Object { return &corev1.Pod{} },
	{Version: "v1", Kind: namespaceKind}:                                func() Object { return &corev1.Namespace{} },
	{Group: "discovery.k8s.io", Version: "v1", Kind: endpointSliceKind}: func() Object { return &discoveryv1.EndpointSlice{} },
}

// typeMeta reads apiVersion and kind loosely: anything else is the strict decoder's business.
func typeMeta(js []byte) schema.GroupVersionKind {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if kjson.UnmarshalCaseSensitivePreserveInts(js, &tm) != nil {
		return schema.GroupVersionKind{}
	}
	return schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
}

// isKubeKind reports whether a document (as JSON) is one of the Kubernetes kinds a Set holds.
func isKubeKind(js []byte) bool {
	_, ok := kubeKinds[typeMeta(js)]
	return ok
}

// isList reports whether a document is a v1 List, what `kubectl get -o yaml` prints for
// several objects.
func isList(js []byte) bool {
	return typeMeta(js) == schema.GroupVersionKind{Version: "v1", Kind: listKind}
}

// listItems splits a v1 List into its items' JSON.
func listItems(js []byte) ([]json.RawMessage, *Error) {
	var list struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   json.RawMessage   `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}
	if e := strictUnmarshal(js, &list); e != nil {
		e.Kind = listKind
		return nil, e
	}
	return list.Items, nil
}

// decodeKube strictly decodes one of the Kubernetes kinds. Objects without a namespace get
// the default one, as with kubectl, except Namespaces, which have none.
func decodeKube(js []byte) (Object, *Error) {
	gvk := typeMeta(js)
	obj := kubeKinds[gvk]()
	if e := strictUnmarshal(js, obj); e != nil {
		var loose struct {
			Metadata json.RawMessage `json:"metadata"`
		}
		_ = kjson.UnmarshalCaseSensitivePreserveInts(js, &loose)
		e.Kind = gvk.Kind
		e.Namespace, e.Name = looseIdentity(loose.Metadata)
		if gvk.Kind == namespaceKind {
			e.Namespace = ""
		}
		return nil, e
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	if obj.GetNamespace() == "" && gvk.Kind != namespaceKind {
		obj.SetNamespace(DefaultNamespace)
	}
	if s, ok := obj.(*corev1.Secret); ok {
		foldStringData(s)
	}
	return obj, nil
}

// validateService checks what translation reads from a Service: its type, cluster IPs and
// ports. The API server checks much more; this only keeps hand-written files honest.
func validateService(v *validator, s *corev1.Service) {
	for i, ip := range s.Spec.ClusterIPs {
		if ip != corev1.ClusterIPNone && ip != "" && len(validation.IsValidIP(nil, ip)) > 0 {
			v.add(fmt.Sprintf("spec.clusterIPs[%d]", i), "invalid IP %q", ip)
		}
	}
	if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone && len(validation.IsValidIP(nil, s.Spec.ClusterIP)) > 0 {
		v.add("spec.clusterIP", "invalid IP %q", s.Spec.ClusterIP)
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName && s.Spec.ExternalName == "" {
		v.add("spec.externalName", "required for type ExternalName")
	}
	names := map[string]bool{}
	for i, p := range s.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			v.add(field+".port", "must be 1-65535, got %d", p.Port)
		}
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			v.add(field+".name", "required when a Service has several ports")
		}
		if names[p.Name] && p.Name != "" {
			v.add(field+".name", "duplicate port name %q", p.Name)
		}
		names[p.Name] = true
	}
}

// validateEndpointSlice requires the label that ties a slice to its Service.
func validateEndpointSlice(v *validator, s *discoveryv1.EndpointSlice) {
	if s.Labels[discoveryv1.LabelServiceName] == "" {
		v.add("metadata.labels", "%s is required: it names the Service the slice belongs to", discoveryv1.LabelServiceName)
	}
	for i, p := range s.Ports {
		if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
			v.add(fmt.Sprintf("ports[%d].port", i), "must be 1-65535, got %d", *p.Port)
		}
	}
}

// validatePod checks the Pod fields translation and the identity check read.
func validatePod(v *validator, p *corev1.Pod) {
	for i, ip := range p.Status.PodIPs {
		if len(validation.IsValidIP(nil, ip.IP)) > 0 {
			v.add(fmt.Sprintf("status.podIPs[%d].ip", i), "invalid IP %q", ip.IP)
		}
	}
	if p.Status.PodIP != "" && len(validation.IsValidIP(nil, p.Status.PodIP)) > 0 {
		v.add("status.podIP", "invalid IP %q", p.Status.PodIP)
	}
}

// errNotNamespaced is the metadata.namespace error of a Namespace that names one.
var errNotNamespaced = errors.New("must be empty: Namespaces are cluster-scoped")

// kubeKindNames lists the Kubernetes kinds for error messages.
func kubeKindNames() string {
	return strings.Join([]string{"v1 Namespace", "v1 Service", "v1 Pod", "discovery.k8s.io/v1 EndpointSlice",
		"v1 Secret (type kubernetes.io/tls)", "v1 List of these"}, ", ")
}
