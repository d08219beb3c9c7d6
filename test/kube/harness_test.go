package kube_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "istio.io/api/networking/v1"
	clientnetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffmesh/skiff/test/kube"
)

// cluster is shared by every test here: starting one takes seconds.
var cluster *kube.Cluster

func TestMain(m *testing.M) { kube.Main(m, &cluster) }

// TestVersion checks that kubectl and the apiserver both report the release
// that `make kube-tools` built, in a form kubectl parses.
func TestVersion(t *testing.T) {
	out, err := cluster.Kubectl(t, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClientVersion struct{ GitVersion, Major, Minor string }
		ServerVersion struct{ GitVersion, Major, Minor string }
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("kubectl version -o json: %v\n%s", err, out)
	}
	for who, got := range map[string]struct{ GitVersion, Major, Minor string }{"client": v.ClientVersion, "server": v.ServerVersion} {
		if got.GitVersion != kube.KubeVersion || got.Major != "1" || got.Minor != "37" {
			t.Errorf("%s version = %+v, want %s (major 1, minor 37)", who, got, kube.KubeVersion)
		}
	}
	info, err := cluster.Kube.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if info.GitVersion != kube.KubeVersion {
		t.Errorf("/version gitVersion = %q, want %q", info.GitVersion, kube.KubeVersion)
	}
}

// TestCRDsEstablished checks that every Istio CRD was installed and is
// served, and that deploy/crds is what the istio.io/api module in go.mod
// publishes (else `make crds` was forgotten after a bump).
func TestCRDsEstablished(t *testing.T) {
	client, err := apiextensions.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	names := cluster.CRDNames(t)
	if len(names) < 10 {
		t.Fatalf("only %d CRDs in deploy/crds: %v", len(names), names)
	}
	for _, name := range names {
		crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(kube.Context(t), name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("CRD %s: %v", name, err)
			continue
		}
		established := false
		for _, c := range crd.Status.Conditions {
			established = established || (c.Type == "Established" && c.Status == "True")
		}
		if !established {
			t.Errorf("CRD %s not Established: %v", name, crd.Status.Conditions)
		}
	}
	for _, want := range []string{"virtualservices.networking.istio.io", "destinationrules.networking.istio.io", "serviceentries.networking.istio.io", "workloadentries.networking.istio.io"} {
		if !slices.Contains(names, want) {
			t.Errorf("deploy/crds lacks %s", want)
		}
	}

	// The checked-in file is the published one, byte for byte.
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/api: %v", err)
	}
	published, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("../../deploy/crds/istio-crds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(published, ours) {
		t.Errorf("deploy/crds/istio-crds.yaml differs from istio.io/api's customresourcedefinitions.gen.yaml: run `make crds`")
	}
}

// TestSchemaValidation checks that the apiserver enforces Istio's schemas: an
// object of the wrong shape is refused with the field named, the right shape
// is stored.
func TestSchemaValidation(t *testing.T) {
	ns := namespace(t, "schema")
	dyn, err := dynamic.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	vsGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": "bad", "namespace": ns},
		"spec":       map[string]any{"hosts": []any{"reviews"}, "http": "notalist"},
	}}
	_, err = dyn.Resource(vsGVR).Namespace(ns).Create(kube.Context(t), bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.http") {
		t.Errorf("creating a VirtualService with spec.http a string: got %v, want Invalid naming spec.http", err)
	}
	t.Logf("spec.http a string: %v", err)

	// The same through kubectl, as a user would see it, for a number where
	// a string belongs; --dry-run=server validates without storing.
	badYAML := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: " + ns + "}\n" +
		"spec: {host: reviews, trafficPolicy: {connectionPool: {tcp: {maxConnections: lots}}}}\n"
	if out, err := cluster.KubectlWithInput(t, badYAML, "apply", "--dry-run=server", "-f", "-"); err == nil ||
		!strings.Contains(err.Error(), "maxConnections") {
		t.Errorf("kubectl apply of a DestinationRule with maxConnections a string: got %v (%s), want an error naming maxConnections", err, out)
	} else {
		t.Logf("maxConnections a string: %v", err)
	}

	good := &clientnetworkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns},
		Spec: networkingv1.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networkingv1.HTTPRoute{{Route: []*networkingv1.HTTPRouteDestination{
				{Destination: &networkingv1.Destination{Host: "reviews", Subset: "v1"}, Weight: 80},
				{Destination: &networkingv1.Destination{Host: "reviews", Subset: "v2"}, Weight: 20},
			}}},
		},
	}
	if _, err := cluster.Istio.NetworkingV1().VirtualServices(ns).Create(kube.Context(t), good, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a valid VirtualService: %v", err)
	}
	got, err := cluster.Istio.NetworkingV1().VirtualServices(ns).Get(kube.Context(t), "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Spec.Http); n != 1 || got.Spec.Http[0].Route[1].Weight != 20 {
		t.Errorf("stored VirtualService spec = %v, want what was created", &got.Spec)
	}
}

// TestKubectlApplyKustomize checks that the built kubectl applies deploy/crds
// as a kustomization, as the docs tell users to (dry run: the shared
// cluster's CRDs stay as the harness applied them).
func TestKubectlApplyKustomize(t *testing.T) {
	out, err := cluster.Kubectl(t, "apply", "--dry-run=server", "-k", "deploy/crds")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "virtualservices.networking.istio.io") {
		t.Errorf("kubectl apply -k deploy/crds printed:\n%s\nwant virtualservices.networking.istio.io among the CRDs", out)
	}
}

// TestTokenKubeconfig checks that a TokenKubeconfig client is the
// ServiceAccount, from the apiserver's point of view, and holds only its RBAC.
func TestTokenKubeconfig(t *testing.T) {
	ns := namespace(t, "token")
	path := cluster.TokenKubeconfig(t, ns, "pilot")
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := "system:serviceaccount:" + ns + ":pilot"
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(kube.Context(t), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview as the ServiceAccount: %v", err)
	}
	if got := review.Status.UserInfo.Username; got != want {
		t.Errorf("SelfSubjectReview says the kubeconfig's user is %q, want %q", got, want)
	}
	// No RBAC grants it anything, and the refusal names it.
	_, err = client.CoreV1().Secrets(ns).List(kube.Context(t), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("listing Secrets as the ServiceAccount: got %v, want Forbidden naming %s", err, want)
	}
	t.Logf("as the ServiceAccount: %v", err)
}

// TestAPIServerRestart stops the apiserver and starts it again: the clients
// made before, the admin kubeconfig and a ServiceAccount token all work
// afterwards, and the data is still there (it lives in etcd).
func TestAPIServerRestart(t *testing.T) {
	ns := namespace(t, "restart")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept", Namespace: ns}, Data: map[string]string{"k": "v"}}
	if _, err := cluster.Kube.CoreV1().ConfigMaps(ns).Create(kube.Context(t), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tokenCfg, err := clientcmd.BuildConfigFromFlags("", cluster.TokenKubeconfig(t, ns, "pilot"))
	if err != nil {
		t.Fatal(err)
	}
	tokenClient := kubernetes.NewForConfigOrDie(tokenCfg)
	host := cluster.Config.Host

	cluster.StopAPIServer(t)
	if _, err := cluster.Kube.CoreV1().ConfigMaps(ns).Get(kube.Context(t), "kept", metav1.GetOptions{}); err == nil {
		t.Fatal("the apiserver answered after StopAPIServer")
	}
	cluster.StartAPIServer(t)

	if cluster.Config.Host != host {
		t.Errorf("apiserver moved from %s to %s", host, cluster.Config.Host)
	}
	got, err := cluster.Kube.CoreV1().ConfigMaps(ns).Get(kube.Context(t), "kept", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if got.Data["k"] != "v" {
		t.Errorf("ConfigMap after the restart = %v, want k=v", got.Data)
	}
	if _, err := cluster.Kubectl(t, "get", "configmap", "kept", "-n", ns); err != nil {
		t.Errorf("kubectl after the restart: %v", err)
	}
	review, err := tokenClient.AuthenticationV1().SelfSubjectReviews().Create(kube.Context(t), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the ServiceAccount token after the restart: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":pilot"; review.Status.UserInfo.Username != want {
		t.Errorf("after the restart the token is %q, want %q", review.Status.UserInfo.Username, want)
	}
}

// TestMissingBinariesFail checks the message a fresh clone gets: Start fails
// (never skips) and says how to build the binaries.
func TestMissingBinariesFail(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/empty\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	start := time.Now()
	c, err := kube.New()
	if err == nil {
		c.Stop()
		t.Fatal("New succeeded without binaries")
	}
	if !strings.Contains(err.Error(), "make kube-tools") {
		t.Errorf("New without binaries: %v, want it to say to run make kube-tools", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %v", d)
	}
}

// namespace creates a namespace for one test. Without a namespace controller
// a deleted namespace never goes away, so it is left in place: the cluster
// dies with the package.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	created, err := cluster.Kube.CoreV1().Namespaces().Create(kube.Context(t), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	return created.Name
}
