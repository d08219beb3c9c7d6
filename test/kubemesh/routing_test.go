package kubemesh

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/test/framework"
)

// The acceptance case: Namespace, Service, EndpointSlices, Pods, VirtualService and
// DestinationRule created in the API server make a real Envoy, whose node ID names one of the
// Pods, route by the rules; a new endpoint changes EDS only; deleting objects removes their
// configuration.
func TestKubernetesRouting(t *testing.T) {
	ns := newNamespace(t, "routing")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	deployService(t, pods, ns, "reviews", "10.253.0.", "v1", "v2")
	const port = 9080
	host := fmt.Sprintf("reviews.%s.svc.cluster.local", ns)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := createPod(t, ns, "client-1", "10.253.0.1", "client", map[string]string{"app": "client"})
	apply(t, versionSubsets(ns, "reviews")+fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: %[1]s}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
`, ns))

	// The node metadata claims other labels; in Kubernetes only the Pod's count.
	envoy := pods.startEnvoy(t, pilot, nodeID(client), "--labels", "app=reviews,version=v2")

	pods.eventuallyRoutedTo(t, url, host, nil, "reviews-v1")
	pods.eventuallyRoutedTo(t, url, host, map[string]string{"end-user": "jason"}, "reviews-v2")
	if n := pilot.Metric(t, "skiff_config_errors", nil); n != 0 {
		t.Errorf("skiff_config_errors = %v, want 0", n)
	}

	// Scaling: a second v1 Pod and its slice. Only its ClusterLoadAssignments change.
	before := envoy.Stats(t)
	v1b := pods.startApp(t, "10.253.0.19", "reviews-v1b")
	createPod(t, ns, "reviews-v1-2", "10.253.0.19", "reviews", map[string]string{"app": "reviews", "version": "v1"})
	createSlice(t, ns, "reviews", "reviews-v1-2", "http", v1b.address)
	framework.Eventually(t, func() error {
		got, err := pods.routedTo(url, host, nil)
		if err != nil {
			return err
		}
		if got != "reviews-v1b" {
			return fmt.Errorf("routed to %s; waiting for the new endpoint to get a request", got)
		}
		return nil
	})
	after := envoy.Stats(t)
	for _, stat := range []string{"cluster_manager.cds.update_success", "listener_manager.lds.update_success",
		fmt.Sprintf("http.outbound_0.0.0.0_%d.rds.%d.update_success", port, port)} {
		if before[stat] != after[stat] {
			t.Errorf("%s went from %d to %d: scaling endpoints must change EDS only", stat, before[stat], after[stat])
		}
	}
	for _, subset := range []string{"", "v1"} {
		stat := fmt.Sprintf("cluster.outbound|%d|%s|%s.update_success", port, subset, host)
		if after[stat] <= before[stat] {
			t.Errorf("%s stayed at %d: the new endpoint should have arrived by EDS", stat, after[stat])
		}
	}

	// The same mesh, dumped with kubectl and served from a folder, translates identically.
	translatesOfflineTheSame(t, pilot, nodeID(client))

	// Deleting the VirtualService removes the header route: jason lands on either version.
	if err := cluster.Istio.NetworkingV1().VirtualServices(ns).Delete(ctx(t), "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if dump := string(envoy.ConfigDump(t)); strings.Contains(dump, "jason") {
			return fmt.Errorf("Envoy's routes still match end-user: jason")
		}
		return nil
	})
	// Deleting the Service removes its clusters and its listener (which Envoy then drains:
	// config_dump shows it until the drain time ends, but it accepts no more connections).
	if err := cluster.Kube.CoreV1().Services(ns).Delete(ctx(t), "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if _, clusters := envoy.Get(t, "/clusters"); strings.Contains(string(clusters), host) {
			return fmt.Errorf("Envoy still has clusters of %s", host)
		}
		if got, err := pods.routedTo(url, host, nil); err == nil {
			return fmt.Errorf("the Service's listener still answers (routed to %s)", got)
		}
		return nil
	})
}

// translatesOfflineTheSame dumps the cluster's objects with `kubectl get -A -o yaml` (one v1
// List), serves the dump from a folder with a second pilot, and compares what both pilots
// would send the proxy.
func translatesOfflineTheSame(t *testing.T, kubePilot *framework.Pilot, node string) {
	t.Helper()
	dump, err := cluster.Kubectl(t, "get", "-A", "-o", "yaml",
		"services,endpointslices.discovery.k8s.io,pods,virtualservices.networking.istio.io,destinationrules.networking.istio.io")
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, dump)
	}
	folderPilot := framework.StartPilot(t, framework.PilotOptions{})
	folderPilot.WriteConfig(t, "cluster-dump.yaml", dump)
	want := kubePilot.ConfigDump(t, node)
	framework.Eventually(t, func() error {
		if got := folderPilot.ConfigDump(t, node); string(got) != string(want) {
			return fmt.Errorf("the folder pilot's config for %s differs from the Kubernetes pilot's:\n%s\nwant:\n%s", node, got, want)
		}
		return nil
	})
}
