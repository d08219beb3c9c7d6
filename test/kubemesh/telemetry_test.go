package kubemesh

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/test/framework"
)

// meshConfigMap is istiod's ConfigMap istio in the control plane's namespace, whose key mesh
// holds the mesh configuration: here an OpenTelemetry tracer on port.
func meshConfigMap(port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: %s}
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel.example.com
        port: %d
`, controlPlaneNamespace, port)
}

// TestKubernetesTelemetryAPI: the mesh configuration from the ConfigMap istio (an otel
// extension provider) and a Telemetry object in the API server (tracing with otel at 100%,
// access logs with the envoy provider) reach a sidecar's config_dump: its connection manager
// traces to the provider's cluster, names spans by the Pod's app label, and logs to stdout.
// An edit of the ConfigMap is watched: the new port reaches the sidecar; a bad edit is reported
// and the last good mesh configuration kept. Envoy ACKs it all.
func TestKubernetesTelemetryAPI(t *testing.T) {
	installPilotRBAC(t) // and the control plane's namespace
	apply(t, meshConfigMap(4317))
	t.Cleanup(func() {
		// Later tests' pilots read the control plane's namespace too.
		c, cancel := context.WithTimeout(context.Background(), framework.Patience)
		defer cancel()
		err := cluster.Kube.CoreV1().ConfigMaps(controlPlaneNamespace).Delete(c, "istio", metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting the ConfigMap istio: %v", err)
		}
	})
	ns := newNamespace(t, "telemetry")
	pilot := startPilot(t)
	createService(t, ns, "web", 9080, "http")
	pod := createPod(t, ns, "client-1", "10.253.9.1", "client", map[string]string{"app": "client"})
	apply(t, fmt.Sprintf(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: default, namespace: %s}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
  accessLogging:
  - providers: [{name: envoy}]
`, ns))
	envoy := newPodNetwork(t, pilot).startEnvoy(t, pilot, nodeID(pod))

	waitDump := func(want ...string) {
		t.Helper()
		framework.Eventually(t, func() error {
			status, body := envoy.Get(t, "/config_dump")
			if status != http.StatusOK {
				return fmt.Errorf("config_dump: %d", status)
			}
			for _, w := range want {
				if !strings.Contains(string(body), w) {
					return fmt.Errorf("the sidecar's config_dump has no %s", w)
				}
			}
			return nil
		})
	}
	waitDump(`"envoy.tracers.opentelemetry"`, `"cluster_name": "outbound|4317||otel.example.com"`,
		`"service_name": "client.`+ns+`"`, `"name": "outbound|4317||otel.example.com"`, `"envoy.access_loggers.file"`)

	apply(t, meshConfigMap(4318))
	waitDump(`"cluster_name": "outbound|4318||otel.example.com"`, `"name": "outbound|4318||otel.example.com"`)

	// A mesh configuration that does not parse is reported, naming the ConfigMap and the
	// field, and the last good one stays in force.
	apply(t, strings.Replace(meshConfigMap(4318), "port: 4318", "port: 0", 1))
	framework.Eventually(t, func() error {
		for _, e := range configErrors(t, pilot).Errors {
			if e.Kind == "ConfigMap" && e.Namespace == controlPlaneNamespace && e.Name == "istio" &&
				e.Field == "data.mesh" && strings.Contains(e.Message, "extensionProviders[0].opentelemetry.port") {
				return nil
			}
		}
		return fmt.Errorf("/debug/config_errors does not list the ConfigMap istio's bad port")
	})
	waitDump(`"cluster_name": "outbound|4318||otel.example.com"`)
	envoy.AssertNoRejections(t)
}
