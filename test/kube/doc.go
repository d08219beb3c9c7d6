// Package kube runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver v1.37.2, built from source by `make kube-tools` into
// .cache/kube-tools/v1.37.2/, with Istio's CRDs from deploy/crds installed and
// Established.
//
// It is for tests of Skiff's Kubernetes side (pilot reading Istio config and
// workloads from an apiserver), so it is a plain apiserver and nothing more:
// there is no controller-manager, scheduler or kubelet. Objects are stored and
// validated (OpenAPI schemas, CEL rules, admission) but nothing reconciles
// them: no default ServiceAccount appears in a new namespace, a deleted
// namespace stays Terminating, a Pod is never scheduled. The ServiceAccount
// admission plugin is off so that Pods can be created without one.
//
// The rules it keeps, like test/framework:
//
//   - Only loopback: etcd and the apiserver listen on 127.0.0.1, on ports
//     picked free at run time, so packages can run side by side.
//   - Missing binaries fail the test with "run make kube-tools"; they never
//     skip it.
//   - Every process is stopped when the test (or, with Main, the package)
//     ends, also on failure, and the processes get SIGKILL if the test binary
//     dies (a panic, `go test -timeout`), so nothing is left running. Their
//     logs are printed when something failed, or always with SKIFF_TEST_LOGS
//     set.
//
// One cluster per test package is the intended use, since starting one takes
// several seconds:
//
//	var cluster *kube.Cluster
//
//	func TestMain(m *testing.M) { kube.Main(m, &cluster) }
//
// Start gives a test a cluster of its own instead. A Cluster offers the admin
// rest.Config and clients (Kubernetes and Istio), kubeconfig files for kubectl
// and subprocesses (KubeconfigFile for the admin, TokenKubeconfig for a
// ServiceAccount's bearer token, so pilot can run with that SA's RBAC), Kubectl
// to run the built kubectl, and StopAPIServer/StartAPIServer to take the
// apiserver down and bring it back on the same address, with the same etcd,
// certificates and signing keys, so clients and tokens keep working.
package kube
