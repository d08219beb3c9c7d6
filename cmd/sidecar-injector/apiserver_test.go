package main

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/test/kube"
)

// TestAgainstAPIServer runs the command in-process against a real kube-apiserver (test/kube):
// it must put its self-managed CA into the webhook configuration's caBundle, and the API
// server must then call it over TLS and store the injected pod, which also proves the patch
// passes the API server's own validation of pods.
func TestAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cluster := kube.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	ignore := admissionregv1.Ignore
	none := admissionregv1.SideEffectClassNone
	url := "https://localhost" + addr[len("127.0.0.1"):] + inject.InjectPath
	webhook := func(name string, ns, obj *metav1.LabelSelector) admissionregv1.MutatingWebhook {
		return admissionregv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &url},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           &ignore,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector:       ns,
			ObjectSelector:          obj,
		}
	}
	// Istio's two webhooks for a revision: by namespace label, and by pod label.
	mwc := &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff-sidecar-injector"},
		Webhooks: []admissionregv1.MutatingWebhook{
			webhook("rev.namespace.sidecar-injector.skiff.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: inject.RevisionLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{"skiff"}},
					{Key: inject.NamespaceInjectionLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
				}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: inject.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}},
				}}),
			webhook("rev.object.sidecar-injector.skiff.io",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: inject.RevisionLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
					{Key: inject.NamespaceInjectionLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
				}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: inject.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}},
					{Key: inject.RevisionLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{"skiff"}},
				}}),
		},
	}
	if _, err := cluster.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	served := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	go func() {
		served <- run(runCtx, options{
			listen:        addr,
			config:        inject.Config{Selector: inject.Selector{Revision: "skiff"}},
			kubeconfig:    cluster.KubeconfigFile(t),
			dnsNames:      []string{"localhost"},
			webhookConfig: mwc.Name,
			logLevel:      "debug",
		})
	}()

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Labels: map[string]string{inject.RevisionLabel: "skiff"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		if _, err := cluster.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:v1"}}},
		}
	}
	// The caBundle is patched shortly after start; until then the API server cannot verify
	// the injector and (failurePolicy Ignore) admits pods unchanged, so retry until injected.
	var got *corev1.Pod
	for got == nil || !hasContainer(got, inject.ProxyContainerName) {
		if ctx.Err() != nil {
			t.Fatalf("no injected pod within 90s; last: %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
		got, err = cluster.Kube.CoreV1().Pods("meshed").Create(ctx, pod("web", map[string]string{"app": "web"}), metav1.CreateOptions{})
		if err != nil && !apierrors.IsInternalError(err) {
			t.Fatalf("creating a pod: %v", err)
		}
	}
	if !hasInit(got, inject.InitContainerName) || got.Annotations[inject.StatusAnnotation] == "" || got.Labels[inject.TLSModeLabel] != "istio" {
		t.Errorf("pod not fully injected: %+v", got.ObjectMeta)
	}

	for name, tc := range map[string]struct {
		ns     string
		labels map[string]string
		want   bool
	}{
		"pod label in a plain namespace": {"plain", map[string]string{inject.RevisionLabel: "skiff"}, true},
		"opted out":                      {"meshed", map[string]string{inject.InjectLabel: "false"}, false},
		"plain":                          {"plain", nil, false},
		"other revision's pod":           {"meshed", map[string]string{inject.RevisionLabel: "canary"}, false},
	} {
		p, err := cluster.Kube.CoreV1().Pods(tc.ns).Create(ctx, pod("p", tc.labels), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if hasContainer(p, inject.ProxyContainerName) != tc.want {
			t.Errorf("%s: injected = %v, want %v", name, !tc.want, tc.want)
		}
	}
}

func hasContainer(p *corev1.Pod, name string) bool {
	return slices.ContainsFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == name })
}

func hasInit(p *corev1.Pod, name string) bool {
	return slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == name })
}
