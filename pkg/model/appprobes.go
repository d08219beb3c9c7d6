package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/appprobe"
)

// AppProbes are the application probes a Pod's sidecar answers on appprobe.StatusPort: the
// originals of the probes the injector rewrote, read from the Pod's istio-proxy container.
type AppProbes struct {
	Probers appprobe.Probers
	// Key stands for the probers' content in configuration keys: the replicas of a Deployment
	// have equal probes and so equal keys, and share their configuration.
	Key string
}

// appProbesKey is the Derived key of a Pod's parsed probes.
type appProbesKey struct{ pod *corev1.Pod }

// appProbesOf is a Pod's probes, what could not be served of them, and the field they came
// from; nil probes when it has none pilot can serve.
type appProbesOf struct {
	probes *AppProbes
	err    error
	field  string
}

// AppProbes returns the application probes of Pod NAMESPACE/NAME, nil if there is no such Pod
// or it has none that pilot can serve (see Warnings for those it cannot). They are parsed once
// per snapshot.
func (s *Snapshot) AppProbes(namespace, name string) *AppProbes {
	pod := s.pods[namespace+"/"+name]
	if pod == nil {
		return nil
	}
	return s.appProbesOf(pod).probes
}

func (s *Snapshot) appProbesOf(pod *corev1.Pod) appProbesOf {
	return s.Derived(appProbesKey{pod}, func() any {
		value, field, ok := appprobe.FromPod(pod)
		if !ok {
			return appProbesOf{}
		}
		probers, err := appprobe.Parse(value)
		out := appProbesOf{err: err, field: field}
		if len(probers) > 0 {
			// Encode writes keys in order, so equal probes give equal keys whatever the
			// order of the Pod's JSON.
			canonical, encErr := probers.Encode()
			if encErr != nil {
				return appProbesOf{err: encErr, field: field}
			}
			sum := sha256.Sum256([]byte(canonical))
			out.probes = &AppProbes{Probers: probers, Key: hex.EncodeToString(sum[:8])}
		}
		return out
	}).(appProbesOf)
}

// appProbeWarnings reports each Pod whose probes pilot cannot serve, with the field and why.
// Probes left out answer 404 on the status port, so the kubelet sees the probe fail.
func (s *Snapshot) appProbeWarnings() []Warning {
	var out []Warning
	for _, pod := range s.Config.Pods {
		if of := s.appProbesOf(pod); of.err != nil {
			out = append(out, Warning{Code: CodeNotServed, Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name,
				Message: fmt.Sprintf("%s: probes the sidecar cannot answer, which then fail: %v", of.field, of.err)})
		}
	}
	return out
}
