package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Selector is who Skiff is among the control planes that may share a cluster.
type Selector struct {
	// Revision is Skiff's revision, the value of istio.io/rev that selects it. Default "skiff".
	Revision string
	// DefaultRevision says Skiff is installed as the cluster's default revision: it then also
	// answers to istio-injection=enabled, to istio.io/rev=default, and to
	// sidecar.istio.io/inject="true" on a pod in a namespace without injection labels, as the
	// default istiod does. Beside an istiod that is the default, leave it false.
	DefaultRevision bool
}

// DefaultSkiffRevision is Selector.Revision when it is empty.
const DefaultSkiffRevision = "skiff"

func (s Selector) revision() string {
	if s.Revision == "" {
		return DefaultSkiffRevision
	}
	return s.Revision
}

// ours says whether an istio.io/rev value names Skiff.
func (s Selector) ours(rev string) bool {
	return rev == s.revision() || (s.DefaultRevision && rev == DefaultRevisionName)
}

// Decide says whether Skiff injects pod, whose namespace has the labels nsLabels, and why. The
// reason is one line for logs, and is given for every decision. In order:
//
//  1. Never twice: a pod with the status annotation or an istio-proxy container is skipped.
//  2. hostNetwork pods are skipped: the capture would rewrite the node's own traffic rules.
//  3. sidecar.istio.io/inject="false" on the pod (label; annotation if there is no label) opts
//     out, whatever the namespace says.
//  4. The namespace's istio-injection label, when present, decides, as it takes precedence over
//     istio.io/rev in Istio: "disabled" never injects; "enabled" selects the default revision,
//     so Skiff injects only with DefaultRevision; another value selects nobody.
//  5. istio.io/rev on the pod, when present, decides (the pod's label wins over the
//     namespace's): Skiff's revision injects, another revision's value is not Skiff's to
//     inject, so beside an istiod the two never both claim a pod.
//  6. istio.io/rev on the namespace likewise.
//  7. With no injection label on either, sidecar.istio.io/inject="true" on the pod injects only
//     when Skiff is the default revision, as in Istio.
//  8. Otherwise the pod is not injected.
func (s Selector) Decide(pod *corev1.Pod, nsLabels map[string]string) (bool, string) {
	if _, ok := pod.Annotations[StatusAnnotation]; ok {
		return false, "already injected: the pod has the " + StatusAnnotation + " annotation"
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainerName {
			return false, "already injected: the pod has an " + ProxyContainerName + " container"
		}
	}
	if pod.Spec.HostNetwork {
		return false, "hostNetwork pod: capturing its traffic would capture the node's"
	}

	podInject, podInjectSet := pod.Labels[InjectLabel]
	podInjectFrom := "label"
	if !podInjectSet {
		podInject, podInjectSet = pod.Annotations[InjectLabel]
		podInjectFrom = "annotation"
	}
	if podInjectSet && podInject == "false" {
		return false, fmt.Sprintf("pod %s %s=false opts out", podInjectFrom, InjectLabel)
	}

	if v, ok := nsLabels[NamespaceInjectionLabel]; ok {
		switch v {
		case "disabled":
			return false, "namespace label " + NamespaceInjectionLabel + "=disabled"
		case "enabled":
			if s.DefaultRevision {
				return true, "namespace label " + NamespaceInjectionLabel + "=enabled, and Skiff is the default revision"
			}
			return false, fmt.Sprintf("namespace label %s=enabled selects the default revision, and Skiff (revision %q) is not installed as the default", NamespaceInjectionLabel, s.revision())
		default:
			return false, fmt.Sprintf("namespace label %s=%q is neither enabled nor disabled: no revision injects", NamespaceInjectionLabel, v)
		}
	}

	for _, l := range []struct {
		where  string
		labels map[string]string
	}{{"pod", pod.Labels}, {"namespace", nsLabels}} {
		rev, ok := l.labels[RevisionLabel]
		if !ok {
			continue
		}
		if s.ours(rev) {
			return true, fmt.Sprintf("%s label %s=%s selects Skiff", l.where, RevisionLabel, rev)
		}
		return false, fmt.Sprintf("%s label %s=%s selects another revision (Skiff is %q)", l.where, RevisionLabel, rev, s.revision())
	}

	if podInjectSet && podInject == "true" {
		if s.DefaultRevision {
			return true, fmt.Sprintf("pod %s %s=true, and Skiff is the default revision", podInjectFrom, InjectLabel)
		}
		return false, fmt.Sprintf("pod %s %s=true opts in, but without a revision label only the default revision injects, and Skiff (revision %q) is not the default", podInjectFrom, InjectLabel, s.revision())
	}
	return false, "no injection label on the pod or its namespace"
}
