package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	type labels = map[string]string
	pod := func(l, a labels) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Labels: l, Annotations: a},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
	}
	enabled := labels{NamespaceInjectionLabel: "enabled"}
	disabled := labels{NamespaceInjectionLabel: "disabled"}
	revSkiff := labels{RevisionLabel: "skiff"}
	revOther := labels{RevisionLabel: "1-24"}
	optOut := labels{InjectLabel: "false"}
	optIn := labels{InjectLabel: "true"}
	merge := func(ls ...labels) labels {
		out := labels{}
		for _, l := range ls {
			for k, v := range l {
				out[k] = v
			}
		}
		return out
	}
	hostNet := pod(nil, nil)
	hostNet.Spec.HostNetwork = true
	withProxy := pod(revSkiff, nil)
	withProxy.Spec.Containers = append(withProxy.Spec.Containers, corev1.Container{Name: ProxyContainerName})

	tests := []struct {
		name       string
		pod        *corev1.Pod
		ns         labels
		asDefault  bool // Skiff installed as the default revision
		want       bool
		wantReason string
	}{
		{"no labels anywhere", pod(nil, nil), nil, false, false, "no injection label"},
		{"no labels, default revision", pod(nil, nil), nil, true, false, "no injection label"},

		{"istio-injection=enabled, not default", pod(nil, nil), enabled, false, false, "not installed as the default"},
		{"istio-injection=enabled, default", pod(nil, nil), enabled, true, true, "Skiff is the default revision"},
		{"istio-injection=disabled", pod(nil, nil), disabled, true, false, "=disabled"},
		{"istio-injection=disabled beats pod rev", pod(revSkiff, nil), disabled, false, false, "=disabled"},
		{"istio-injection=disabled beats pod opt-in", pod(optIn, nil), disabled, true, false, "=disabled"},
		{"istio-injection other value", pod(nil, nil), labels{NamespaceInjectionLabel: "yes"}, true, false, "neither enabled nor disabled"},
		{"istio-injection beats namespace rev", pod(nil, nil), merge(enabled, revSkiff), false, false, "not installed as the default"},

		{"namespace rev=skiff", pod(nil, nil), revSkiff, false, true, "namespace label istio.io/rev=skiff"},
		{"namespace rev=other", pod(nil, nil), revOther, false, false, "another revision"},
		{"namespace rev=default, default", pod(nil, nil), labels{RevisionLabel: "default"}, true, true, "selects Skiff"},
		{"namespace rev=default, not default", pod(nil, nil), labels{RevisionLabel: "default"}, false, false, "another revision"},
		{"pod rev=skiff, bare namespace", pod(revSkiff, nil), nil, false, true, "pod label istio.io/rev=skiff"},
		{"pod rev=skiff wins over namespace rev=other", pod(revSkiff, nil), revOther, false, true, "pod label"},
		{"pod rev=other wins over namespace rev=skiff", pod(revOther, nil), revSkiff, false, false, "pod label istio.io/rev=1-24 selects another revision"},

		{"pod opt-out beats namespace rev", pod(optOut, nil), revSkiff, false, false, "opts out"},
		{"pod opt-out beats enabled namespace", pod(optOut, nil), enabled, true, false, "opts out"},
		{"pod opt-out beats pod rev", pod(merge(optOut, revSkiff), nil), nil, false, false, "opts out"},
		{"opt-out annotation", pod(nil, optOut), revSkiff, false, false, "annotation"},
		{"label beats annotation", pod(optIn, optOut), revSkiff, false, true, "namespace label"},
		{"pod opt-in, bare namespace, default", pod(optIn, nil), nil, true, true, "Skiff is the default revision"},
		{"pod opt-in, bare namespace, not default", pod(optIn, nil), nil, false, false, "only the default revision injects"},
		{"pod opt-in, namespace rev=other", pod(optIn, nil), revOther, true, false, "another revision"},
		{"pod opt-in with rev=skiff", pod(merge(optIn, revSkiff), nil), nil, false, true, "pod label istio.io/rev=skiff"},

		{"already injected (annotation)", pod(revSkiff, labels{StatusAnnotation: "{}"}), revSkiff, false, false, "already injected"},
		{"already injected (container)", withProxy, revSkiff, false, false, "istio-proxy container"},
		{"hostNetwork", hostNet, revSkiff, false, false, "hostNetwork"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Selector{DefaultRevision: tt.asDefault}
			if tt.name == "hostNetwork" {
				tt.pod.Labels = revSkiff
			}
			got, reason := s.Decide(tt.pod, tt.ns)
			if got != tt.want {
				t.Errorf("Decide = %v (%s), want %v", got, reason, tt.want)
			}
			if !strings.Contains(reason, tt.wantReason) {
				t.Errorf("reason %q does not contain %q", reason, tt.wantReason)
			}
		})
	}
}

// Beside an istiod, for every combination of labels at most one of the two injects the pod:
// Skiff (revision skiff, not default) and an istiod that is the default revision, modelled by
// Decide with Istio's own rules (Skiff's Selector as revision "default" and DefaultRevision).
func TestDecideNeverBoth(t *testing.T) {
	skiff := Selector{Revision: "skiff"}
	istiod := Selector{Revision: "1-24", DefaultRevision: true}
	values := map[string][]string{
		NamespaceInjectionLabel: {"", "enabled", "disabled"},
		RevisionLabel:           {"", "skiff", "1-24", "default"},
		InjectLabel:             {"", "true", "false"},
	}
	set := func(m map[string]string, k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	for _, nsInj := range values[NamespaceInjectionLabel] {
		for _, nsRev := range values[RevisionLabel] {
			for _, podRev := range values[RevisionLabel] {
				for _, podInj := range values[InjectLabel] {
					ns, pl := map[string]string{}, map[string]string{}
					set(ns, NamespaceInjectionLabel, nsInj)
					set(ns, RevisionLabel, nsRev)
					set(pl, RevisionLabel, podRev)
					set(pl, InjectLabel, podInj)
					p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: pl}}
					a, ra := skiff.Decide(p, ns)
					b, rb := istiod.Decide(p, ns)
					if a && b {
						t.Errorf("ns %v pod %v: both inject (skiff: %s; istiod: %s)", ns, pl, ra, rb)
					}
				}
			}
		}
	}
}
