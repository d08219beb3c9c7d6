package config

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// kubeDump is what `kubectl get ns,svc,endpointslices,pods -o yaml` prints, trimmed.
const kubeDump = `
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: shop
    labels: {istio-injection: enabled}
  status: {phase: Active}
- apiVersion: v1
  kind: Service
  metadata: {name: cart, namespace: shop, resourceVersion: "42"}
  spec:
    clusterIP: 10.96.0.12
    clusterIPs: [10.96.0.12]
    ports:
    - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  status: {loadBalancer: {}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: cart-abc
    namespace: shop
    labels: {kubernetes.io/service-name: cart}
  addressType: IPv4
  endpoints:
  - addresses: [10.244.0.7]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: cart-1, namespace: shop}
  ports:
  - {name: http, port: 8080, protocol: TCP}
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-1
  labels: {app: cart, version: v1}
spec:
  serviceAccountName: cart
  containers: [{name: app, image: cart}]
status:
  podIP: 10.244.0.7
`

func TestParseKubernetesKinds(t *testing.T) {
	objs, err := Parse("dump.yaml", []byte(kubeDump))
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(objs...)
	if len(set.Namespaces) != 1 || len(set.Services) != 1 || len(set.EndpointSlices) != 1 || len(set.Pods) != 1 {
		t.Fatalf("set: %d namespaces, %d services, %d slices, %d pods", len(set.Namespaces), len(set.Services), len(set.EndpointSlices), len(set.Pods))
	}
	if ns := set.Namespaces[0]; ns.Namespace != "" || KindOf(ns) != "Namespace" {
		t.Errorf("namespace %q kind %q: a Namespace has no namespace", ns.Namespace, KindOf(ns))
	}
	if pod := set.Pods[0]; pod.Namespace != DefaultNamespace || pod.Spec.ServiceAccountName != "cart" {
		t.Errorf("pod %s/%s sa %q", pod.Namespace, pod.Name, pod.Spec.ServiceAccountName)
	}
	if got := set.Services[0].Spec.Ports[0].TargetPort.IntValue(); got != 8080 {
		t.Errorf("targetPort %d", got)
	}
}

func TestParseKubernetesKindErrors(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field in a List item": {`
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: cart}
  spec: {portz: []}
`, `document 0 (Service default/cart): items[0]: unknown field "spec.portz"`},
		"slice without its service": {`
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-abc}
addressType: IPv4
`, "metadata.labels: kubernetes.io/service-name is required"},
		"bad port": {`
apiVersion: v1
kind: Service
metadata: {name: cart}
spec: {ports: [{port: 0}]}
`, "spec.ports[0].port: must be 1-65535, got 0"},
		"namespace with a namespace": {`
apiVersion: v1
kind: Namespace
metadata: {name: shop, namespace: default}
`, "metadata.namespace: must be empty"},
		"unsupported core kind": {`
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
`, "v1 Service"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSecretStringDataFolded(t *testing.T) {
	s := &corev1.Secret{StringData: map[string]string{"a": "1"}, Data: map[string][]byte{"a": []byte("0"), "b": []byte("2")}}
	foldStringData(s)
	if string(s.Data["a"]) != "1" || string(s.Data["b"]) != "2" || s.StringData != nil {
		t.Fatalf("data %v stringData %v", s.Data, s.StringData)
	}
}
