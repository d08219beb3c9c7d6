package inject

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/bootstrap"
)

// deploymentPod is a pod as a ReplicaSet creates it: no name yet, a generateName, an owner.
func deploymentPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "reviews-v1-7f99b6d4c5-",
			Labels:       map[string]string{"app": "reviews", "version": "v1", "pod-template-hash": "7f99b6d4c5"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "reviews-v1-7f99b6d4c5", Controller: ptr(true),
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "bookinfo-reviews",
			InitContainers:     []corev1.Container{{Name: "migrate", Image: "migrate"}},
			Containers: []corev1.Container{{
				Name: "reviews", Image: "reviews:v1",
				Env: []corev1.EnvVar{{Name: "PASSWORD", Value: "hunter2"}},
			}},
		},
	}
}

func TestInject(t *testing.T) {
	orig := deploymentPod()
	before := orig.DeepCopy()
	got, err := Config{}.Inject(orig, "bookinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(orig, before) {
		t.Error("Inject changed its argument")
	}

	// Init containers: the application's first, then the capture.
	if n := len(got.Spec.InitContainers); n != 2 || got.Spec.InitContainers[1].Name != InitContainerName {
		t.Fatalf("init containers %v, want migrate then %s", names(got.Spec.InitContainers), InitContainerName)
	}
	ic := got.Spec.InitContainers[1]
	if ic.Image != DefaultCaptureImage || !slices.Equal(ic.Command, []string{"skiff-capture"}) {
		t.Errorf("istio-init runs %s %v", ic.Image, ic.Command)
	}
	wantArgs := "--outbound-port 15001 --inbound-port 15006 --proxy-uid 1337 --proxy-gid 1337 --exclude-inbound-ports 15090,15021,15020,15000"
	if a := strings.Join(ic.Args, " "); a != wantArgs {
		t.Errorf("istio-init args %q, want %q", a, wantArgs)
	}
	sc := ic.SecurityContext
	if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		*sc.RunAsUser != 0 || *sc.RunAsNonRoot || *sc.Privileged || *sc.AllowPrivilegeEscalation {
		t.Errorf("istio-init securityContext %+v", sc)
	}

	// Containers: the application's, then the proxy.
	if n := len(got.Spec.Containers); n != 2 || got.Spec.Containers[1].Name != ProxyContainerName {
		t.Fatalf("containers %v", names(got.Spec.Containers))
	}
	pc := got.Spec.Containers[1]
	if pc.Image != DefaultProxyImage || !slices.Equal(pc.Command, []string{"envoy"}) {
		t.Errorf("istio-proxy runs %s %v", pc.Image, pc.Command)
	}
	if i := slices.Index(pc.Args, "--service-node"); i < 0 || pc.Args[i+1] != NodeIDArg {
		t.Errorf("args %v: no --service-node %s", pc.Args, NodeIDArg)
	}
	env := map[string]string{}
	for _, e := range pc.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	wantEnv := map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP", "SERVICE_ACCOUNT": "spec.serviceAccountName"}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("env %v, want %v", env, wantEnv)
	}
	psc := pc.SecurityContext
	if *psc.RunAsUser != ProxyUID || *psc.RunAsGroup != ProxyGID || !*psc.RunAsNonRoot || !slices.Equal(psc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("istio-proxy securityContext %+v", psc)
	}
	if p := pc.ReadinessProbe.HTTPGet; p.Path != "/ready" || p.Port.IntValue() != 15021 {
		t.Errorf("readiness probe %s:%s", p.Path, p.Port.String())
	}
	if len(pc.Ports) != 1 || pc.Ports[0].ContainerPort != 15090 || pc.Ports[0].Name != "http-envoy-prom" {
		t.Errorf("ports %v", pc.Ports)
	}
	if cpu, mem := pc.Resources.Requests.Cpu().String(), pc.Resources.Requests.Memory().String(); cpu != "100m" || mem != "128Mi" {
		t.Errorf("requests cpu %s memory %s", cpu, mem)
	}
	if len(pc.VolumeMounts) != 1 || pc.VolumeMounts[0].MountPath != CARootMountPath || pc.VolumeMounts[0].Name != CARootVolumeName {
		t.Errorf("volume mounts %v", pc.VolumeMounts)
	}
	if v := got.Spec.Volumes; len(v) != 1 || v[0].ConfigMap == nil || v[0].ConfigMap.Name != CARootConfigMap {
		t.Errorf("volumes %v", v)
	}

	// The bootstrap: per workload cluster and labels, TLS to pilot with the mounted root.
	var boot map[string]any
	if err := json.Unmarshal([]byte(pc.Args[slices.Index(pc.Args, "--config-yaml")+1]), &boot); err != nil {
		t.Fatalf("--config-yaml is not JSON: %v", err)
	}
	node := boot["node"].(map[string]any)
	if node["cluster"] != "reviews.bookinfo" || node["id"] != nil {
		t.Errorf("bootstrap node %v: want cluster reviews.bookinfo and no id", node)
	}
	bootLabels := node["metadata"].(map[string]any)["LABELS"].(map[string]any)
	if bootLabels["app"] != "reviews" || bootLabels[TLSModeLabel] != "istio" {
		t.Errorf("bootstrap LABELS %v", bootLabels)
	}
	if js := pc.Args[slices.Index(pc.Args, "--config-yaml")+1]; !strings.Contains(js, `"filename":"/var/run/secrets/istio/root-cert.pem"`) ||
		!strings.Contains(js, `"address":"skiff-pilot.istio-system.svc","port_value":15012`) || !strings.Contains(js, `"sni":"skiff-pilot.istio-system.svc"`) {
		t.Errorf("bootstrap does not reach pilot over TLS with the mounted root:\n%s", js)
	}

	wantLabels := map[string]string{TLSModeLabel: "istio", CanonicalNameLabel: "reviews", CanonicalRevisionLabel: "v1"}
	for k, v := range wantLabels {
		if got.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, got.Labels[k], v)
		}
	}
	wantAnn := map[string]string{
		"prometheus.io/scrape": "true", "prometheus.io/port": "15090", "prometheus.io/path": "/stats/prometheus",
		DefaultContainerAnnotation: "reviews",
		StatusAnnotation:           `{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istiod-ca-cert"],"imagePullSecrets":null,"revision":"skiff"}`,
	}
	if !reflect.DeepEqual(got.Annotations, wantAnn) {
		t.Errorf("annotations %v\nwant %v", got.Annotations, wantAnn)
	}

	// What the workload set stays.
	mine := deploymentPod()
	mine.Labels[CanonicalNameLabel] = "my-name"
	mine.Annotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
	got, err = Config{ProxyImage: "envoy:x", CaptureImage: "cap:x", PilotAddress: "10.0.0.1:15012", PilotServerName: "pilot.example"}.Inject(mine, "bookinfo")
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels[CanonicalNameLabel] != "my-name" || got.Annotations["prometheus.io/port"] != "8080" {
		t.Errorf("workload's own label/annotation overwritten: %v %v", got.Labels, got.Annotations)
	}
	if got.Spec.Containers[1].Image != "envoy:x" || got.Spec.InitContainers[1].Image != "cap:x" {
		t.Error("images not taken from Config")
	}
	if js := got.Spec.Containers[1].Args[1]; !strings.Contains(js, `"sni":"pilot.example"`) || !strings.Contains(js, `"address":"10.0.0.1"`) {
		t.Errorf("pilot address/name not taken from Config:\n%s", js)
	}
}

func TestPatchApplies(t *testing.T) {
	for name, pod := range map[string]*corev1.Pod{
		"deployment pod": deploymentPod(),
		"bare pod":       {ObjectMeta: metav1.ObjectMeta{Name: "sleep"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sleep", Image: "curl"}}}},
		"probed pod":     probedPod(),
	} {
		mutated, err := Config{}.Inject(pod, "default")
		if err != nil {
			t.Fatal(err)
		}
		patch, err := Patch(pod, mutated)
		if err != nil {
			t.Fatal(err)
		}
		// Applied to the pod as the API server holds it, the patch gives the mutated pod.
		orig, _ := json.Marshal(pod)
		p, err := jsonpatchapply.DecodePatch(patch)
		if err != nil {
			t.Fatalf("%s: patch is not RFC 6902: %v\n%s", name, err, patch)
		}
		out, err := p.Apply(orig)
		if err != nil {
			t.Fatalf("%s: applying: %v", name, err)
		}
		var applied corev1.Pod
		if err := json.Unmarshal(out, &applied); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(mutated)
		have, _ := json.Marshal(&applied)
		if string(want) != string(have) {
			t.Errorf("%s: patched pod differs from the mutated one:\n%s\n%s", name, have, want)
		}
		// Only the rewritten probes (probes.go) are replaced or removed; the rest is added.
		var ops []struct{ Op, Path string }
		if err := json.Unmarshal(patch, &ops); err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if op.Op != "add" && !probePath.MatchString(op.Path) {
				t.Errorf("%s: patch does %s %s", name, op.Op, op.Path)
			}
		}
	}
}

// probePath is where a patch may replace or remove: an application container's probe.
var probePath = regexp.MustCompile(`^/spec/containers/[0-9]+/(readinessProbe|livenessProbe|startupProbe)/`)

func TestWorkloadName(t *testing.T) {
	ctrl := ptr(true)
	for want, pod := range map[string]*corev1.Pod{
		"reviews-v1": deploymentPod(),
		"mysql":      {ObjectMeta: metav1.ObjectMeta{Name: "mysql-0", OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "mysql", Controller: ctrl}}}},
		"sleep":      {ObjectMeta: metav1.ObjectMeta{Name: "sleep"}},
		"batch":      {ObjectMeta: metav1.ObjectMeta{GenerateName: "batch-"}},
		"unknown":    {},
		"rs":         {ObjectMeta: metav1.ObjectMeta{GenerateName: "rs-", OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Controller: ctrl}}}},
	} {
		if got := WorkloadName(pod); got != want {
			t.Errorf("WorkloadName = %q, want %q", got, want)
		}
	}
	if n, r := CanonicalService(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"app.kubernetes.io/name": "web", "app.kubernetes.io/version": "2"}}}); n != "web" || r != "2" {
		t.Errorf("CanonicalService = %s, %s", n, r)
	}
	if n, r := CanonicalService(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}}); n != "x" || r != "latest" {
		t.Errorf("CanonicalService of an unlabelled pod = %s, %s", n, r)
	}
}

// The capture's excluded ports are the bootstrap's listener ports and the admin's.
func TestCaptureMatchesBootstrap(t *testing.T) {
	for _, addr := range []string{bootstrap.DefaultReadinessAddress, bootstrap.DefaultPrometheusAddress, bootstrap.DefaultAdminAddress} {
		port := addr[strings.LastIndexByte(addr, ':')+1:]
		if !strings.Contains(","+CaptureArgs()[9]+",", ","+port+",") {
			t.Errorf("port %s of %s is captured", port, addr)
		}
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
