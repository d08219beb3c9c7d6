package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

const (
	// namespaces is how many namespaces the services are spread over (ns-0 … ns-9).
	namespaces = 10
	// servicePort is every service's one HTTP port; pilot names the sidecar route
	// configuration after it ("8080"), so all services share one route configuration.
	servicePort = 8080
	// apiPrefix is the URI prefix of the weighted route in every VirtualService.
	apiPrefix = "/api"
)

// Mesh is the generated configuration folder. It keeps each service's current weights and
// endpoint addresses so that a change rewrites one service's small file with only one field
// different, which is what pilot's folder watcher and loader see as one edited object.
type Mesh struct {
	Dir      string
	services []serviceState
}

// serviceState is what a service's file currently says.
type serviceState struct {
	weightV1, weightV2 uint32
	addrV1, addrV2     netip.Addr
}

// GenerateMesh writes services services into dir (created if missing), one file per service
// under a folder per namespace: DIR/ns-K/svc-i.yaml. One file per service keeps every change
// small however large the mesh is.
func GenerateMesh(dir string, services int) (*Mesh, error) {
	if services < 1 || services > 1<<16 {
		return nil, fmt.Errorf("generating mesh: %d services: want 1 to 65536 (endpoint addresses are 10.x.HI.LO)", services)
	}
	m := &Mesh{Dir: dir, services: make([]serviceState, services)}
	for k := range namespaces {
		if err := os.MkdirAll(filepath.Join(dir, namespace(k)), 0o755); err != nil {
			return nil, fmt.Errorf("generating mesh: %w", err)
		}
	}
	for i := range m.services {
		m.services[i] = serviceState{weightV1: 90, weightV2: 10, addrV1: endpointAddr(64, i), addrV2: endpointAddr(96, i)}
		if err := m.write(i); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Services is the number of services in the mesh.
func (m *Mesh) Services() int { return len(m.services) }

// SetWeights rewrites service i's VirtualService to split its /api route v1/v2 as given.
func (m *Mesh) SetWeights(i int, v1, v2 uint32) error {
	m.services[i].weightV1, m.services[i].weightV2 = v1, v2
	return m.write(i)
}

// SetEndpointV1 rewrites service i's ServiceEntry with a new address for its v1 endpoint.
func (m *Mesh) SetEndpointV1(i int, addr netip.Addr) error {
	m.services[i].addrV1 = addr
	return m.write(i)
}

// write replaces service i's file atomically: a hidden temporary file (the loader skips
// hidden files) renamed over the old one, so pilot never reads a half-written file and a
// change is one rename event, as an editor's save is.
func (m *Mesh) write(i int) error {
	path := serviceFile(m.Dir, i)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(serviceYAML(i, m.services[i])), 0o644); err != nil {
		return fmt.Errorf("writing service %d: %w", i, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing service %d: %w", i, err)
	}
	return nil
}

func namespace(k int) string { return fmt.Sprintf("ns-%d", k) }

// serviceName and serviceHost name service i; it lives in namespace ns-(i%10).
func serviceName(i int) string { return fmt.Sprintf("svc-%d", i) }

func serviceHost(i int) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local", serviceName(i), namespace(i%namespaces))
}

func serviceFile(dir string, i int) string {
	return filepath.Join(dir, namespace(i%namespaces), serviceName(i)+".yaml")
}

// endpointAddr is service i's address in 10.SECOND.0.0/16. These addresses are data only:
// pilot puts them in EDS and nothing ever dials them.
func endpointAddr(second byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, second, byte(i >> 8), byte(i)})
}

// serviceYAML is one service: a ServiceEntry with a v1 and a v2 endpoint, a DestinationRule
// with subsets by version, and a VirtualService splitting /api between them (the rest to v1).
// Hosts are written in full so nothing depends on short-name resolution.
func serviceYAML(i int, s serviceState) string {
	name, ns, host := serviceName(i), namespace(i%namespaces), serviceHost(i)
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[3]s
  ports:
  - number: %[4]d
    name: http
    protocol: HTTP
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - address: %[5]s
    labels:
      version: v1
  - address: %[6]s
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  host: %[3]s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[3]s
  http:
  - name: api
    match:
    - uri:
        prefix: %[7]s
    route:
    - destination:
        host: %[3]s
        subset: v1
      weight: %[8]d
    - destination:
        host: %[3]s
        subset: v2
      weight: %[9]d
  - name: default
    route:
    - destination:
        host: %[3]s
        subset: v1
`, name, ns, host, servicePort, s.addrV1, s.addrV2, apiPrefix, s.weightV1, s.weightV2)
}

// subsetCluster is pilot's (Istio's) outbound cluster name for a subset of service i; with an
// empty subset it is the service's own cluster, which is also its EDS service name.
func subsetCluster(i int, subset string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", servicePort, subset, serviceHost(i))
}

// virtualHostName is the name pilot gives service i's virtual host in route configuration "8080".
func virtualHostName(i int) string { return fmt.Sprintf("%s:%d", serviceHost(i), servicePort) }

// WritePolicies writes, for each of workloads, an AuthorizationPolicy in the workload's
// namespace that selects it by its app label (as proxyNode labels it) and allows GETs. Pilot
// translates workloads that no selector tells apart once between them; these policies make
// every workload's listeners differ, the shape of a mesh where each workload has a policy.
func WritePolicies(dir string, workloads int) error {
	for w := range workloads {
		ns := namespace(w % namespaces)
		doc := fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wl-%d, namespace: %s}
spec:
  selector: {matchLabels: {app: wl-%d}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
`, w, ns, w)
		path := filepath.Join(dir, ns, fmt.Sprintf("policy-wl-%d.yaml", w))
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			return fmt.Errorf("writing the policy of workload %d: %w", w, err)
		}
	}
	return nil
}
