package model

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

func probedPod(name, probers string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}},
	}
	if probers != "" {
		pod.Spec.Containers[1].Env = []corev1.EnvVar{{Name: "POD_IP"}, {Name: "ISTIO_KUBE_APP_PROBERS", Value: probers}}
	}
	return pod
}

func TestAppProbes(t *testing.T) {
	const (
		ready = `"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080},"timeoutSeconds":1}`
		live  = `"/app-health/app/livez":{"tcpSocket":{"port":8080},"timeoutSeconds":1}`
	)
	snap := Build(config.NewSet(
		probedPod("web-1", "{"+ready+","+live+"}"),
		probedPod("web-2", "{"+live+","+ready+"}"), // a replica, its JSON in another order
		probedPod("other", "{"+ready+"}"),
		probedPod("partly", `{`+ready+`,"/app-health/app/livez":{"tcpSocket":{"port":"http"}}}`),
		probedPod("broken", `{"/app-health/app/readyz":`),
		probedPod("none", ""),
	))

	web1, web2 := snap.AppProbes("shop", "web-1"), snap.AppProbes("shop", "web-2")
	if web1 == nil || len(web1.Probers) != 2 || web1.Probers["/app-health/app/readyz"].HTTPGet.Path != "/ready" {
		t.Fatalf("web-1's probes: %+v", web1)
	}
	if web2 == nil || web1.Key != web2.Key {
		t.Errorf("replicas with the same probes have keys %v and %v", web1, web2)
	}
	if other := snap.AppProbes("shop", "other"); other == nil || other.Key == web1.Key {
		t.Errorf("different probes share a key: %+v", other)
	}
	if snap.AppProbes("shop", "web-1") != web1 {
		t.Error("probes parsed again: want once per snapshot")
	}
	if p := snap.AppProbes("shop", "partly"); p == nil || len(p.Probers) != 1 {
		t.Errorf("the good probe of a pod with a bad one: %+v", p)
	}
	for _, name := range []string{"broken", "none", "missing"} {
		if p := snap.AppProbes("shop", name); p != nil {
			t.Errorf("%s: probes %+v", name, p)
		}
	}

	var warned []string
	for _, w := range snap.Warnings() {
		if w.Code != CodeNotServed || w.Kind != "Pod" || w.Namespace != "shop" ||
			!strings.Contains(w.Message, "spec.containers[1].env[1] (ISTIO_KUBE_APP_PROBERS)") {
			t.Errorf("warning %s", w)
		}
		warned = append(warned, w.Name)
	}
	if strings.Join(warned, ",") != "broken,partly" {
		t.Errorf("warned about %v, want broken and partly", warned)
	}
}
