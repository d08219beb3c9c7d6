package kubemesh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/test/framework"
)

// deploy/pilot's manifests pass the API server's own validation and admission, without being
// applied. A server-side dry run does not create the namespace it would create, so
// istio-system must exist already, as it does where istiod runs (installPilotRBAC makes it).
func TestDeployPilotServerDryRun(t *testing.T) {
	installPilotRBAC(t)
	dir := filepath.Join(framework.RepoRoot(t), "deploy", "pilot")
	files := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "-f", filepath.Join(dir, n))
		}
		return out
	}
	for _, args := range [][]string{
		append([]string{"apply", "--dry-run=server"}, files("namespace.yaml", "rbac.yaml", "pilot.yaml")...),
		{"apply", "--dry-run=server", "-k", dir},
	} {
		out, err := cluster.Kubectl(t, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for _, want := range []string{"deployment.apps/skiff-pilot", "clusterrole.rbac.authorization.k8s.io/skiff-pilot", "service/skiff-pilot"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl %s did not mention %s:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
}

// Every kustomization in deploy/ passes a server-side dry run: the default install, the
// default-revision and cert-manager variants (with cert-manager's own CRDs installed, from its
// module), and the CRDs. The cert-manager objects also decode strictly into cert-manager's Go
// types.
func TestDeployAllServerDryRun(t *testing.T) {
	installPilotRBAC(t)
	root := filepath.Join(framework.RepoRoot(t), "deploy")
	installCertManagerCRDs(t)
	for _, dir := range []string{"", "default-revision", "cert-manager", "crds", "pilot", "injector"} {
		out, err := cluster.Kubectl(t, "apply", "--dry-run=server", "-k", filepath.Join(root, dir))
		if err != nil {
			t.Errorf("kubectl apply --dry-run=server -k deploy/%s: %v\n%s", dir, err, out)
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "cert-manager", "certificate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range strings.Split(string(data), "\n---\n") {
		var obj any = &certmanagerv1.Certificate{}
		if strings.Contains(doc, "\nkind: Issuer\n") {
			obj = &certmanagerv1.Issuer{}
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("deploy/cert-manager/certificate.yaml document %d: %v", i, err)
		}
	}
}

// installCertManagerCRDs installs the Certificate and Issuer CRDs of the cert-manager version
// in go.mod, as published in its module.
func installCertManagerCRDs(t *testing.T) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locating the cert-manager module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	for _, f := range []string{"cert-manager.io_certificates.yaml", "cert-manager.io_issuers.yaml"} {
		path := filepath.Join(crds, f)
		if out, err := cluster.Kubectl(t, "apply", "--server-side", "-f", path); err != nil {
			t.Fatalf("kubectl apply -f %s: %v\n%s", path, err, out)
		}
	}
	// Not `kubectl wait --for condition=established`: on a CRD the API server has not yet given
	// any condition it fails at once instead of waiting.
	cluster.WaitEstablished(t, "certificates.cert-manager.io", "issuers.cert-manager.io")
}

// The ServiceAccount deploy/pilot binds may read the mesh and write only its CA Secret and the
// root certificate ConfigMaps. (Every kubemesh test runs pilot with this account's token, so
// the "yes" side is also proven by pilot working.)
func TestPilotRBACIsReadOnly(t *testing.T) {
	installPilotRBAC(t)
	as := "--as=system:serviceaccount:" + controlPlaneNamespace + ":" + pilotServiceAccount
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "pods", "-A"}, "yes"},
		{[]string{"watch", "endpointslices.discovery.k8s.io", "-A"}, "yes"},
		{[]string{"watch", "virtualservices.networking.istio.io", "-A"}, "yes"},
		{[]string{"list", "authorizationpolicies.security.istio.io", "-A"}, "yes"},
		{[]string{"watch", "telemetries.telemetry.istio.io", "-A"}, "yes"},
		{[]string{"watch", "configmaps/istio", "-n", controlPlaneNamespace}, "yes"},
		{[]string{"create", "secrets", "-n", controlPlaneNamespace}, "yes"},
		{[]string{"update", "configmaps/istio-ca-root-cert", "-n", "default"}, "yes"},
		{[]string{"create", "secrets", "-n", "default"}, "no"},
		{[]string{"update", "secrets/skiff-ca", "-n", controlPlaneNamespace}, "no"},
		{[]string{"delete", "secrets", "-n", controlPlaneNamespace}, "no"},
		{[]string{"update", "configmaps/other", "-n", "default"}, "no"},
		{[]string{"delete", "pods", "-A"}, "no"},
		{[]string{"update", "virtualservices.networking.istio.io", "-A"}, "no"},
		{[]string{"create", "services", "-n", "default"}, "no"},
		{[]string{"patch", "pods/status", "-A"}, "no"},
	} {
		args := append(append([]string{"auth", "can-i"}, c.args...), as)
		out, _ := cluster.Kubectl(t, args...) // can-i exits 1 for "no"
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("kubectl %s: %q, want %q", strings.Join(args, " "), got, c.want)
		}
	}
}
