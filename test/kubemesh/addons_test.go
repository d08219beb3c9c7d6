package kubemesh

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// deploy/addons (Prometheus and Jaeger) and its MeshConfig and Telemetry example pass the API server's
// validation and admission without being applied, in istio-system as deploy/pilot makes it.
// (test/e2e's TestAddonPrometheusScrapesPilotAndSidecars runs the Prometheus configuration.)
func TestDeployAddonsServerDryRun(t *testing.T) {
	installPilotRBAC(t)
	dir := filepath.Join(framework.RepoRoot(t), "deploy", "addons")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"apply", "--dry-run=server", "-k", dir}, []string{
			"serviceaccount/prometheus", "configmap/prometheus", "clusterrole.rbac.authorization.k8s.io/prometheus",
			"clusterrolebinding.rbac.authorization.k8s.io/prometheus", "service/prometheus", "deployment.apps/prometheus",
			"configmap/jaeger", "deployment.apps/jaeger", "service/tracing", "service/jaeger-collector", "service/zipkin",
		}},
		{[]string{"apply", "--dry-run=server", "-f", filepath.Join(dir, "mesh-config.yaml")}, []string{"configmap/istio", "telemetry.telemetry.istio.io/mesh-default"}},
	} {
		out, err := cluster.Kubectl(t, c.args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
		for _, want := range c.want {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl %s did not mention %s:\n%s", strings.Join(c.args, " "), want, out)
			}
		}
	}
}
