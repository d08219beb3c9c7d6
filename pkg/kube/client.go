// Package kube is pilot's Kubernetes mode. It watches the API server through client-go and
// istio.io/client-go informers and turns what it sees into config.Sets, which pilot builds and
// pushes exactly as it does a folder's; it keeps the CA in a Secret, publishes the root
// certificate to every namespace, and watches only the Secrets that Gateways name.
//
// What it reads is what istiod reads: Namespaces, Services, EndpointSlices and Pods, and every
// Istio kind pilot translates. Objects are never written back, except the CA's own Secret and
// the root certificate ConfigMaps (deploy/ grants exactly that).
package kube

import (
	"fmt"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// userAgent names pilot in the API server's audit log and metrics.
const userAgent = "skiff-pilot"

// RESTConfig loads a client configuration: the kubeconfig file when one is named, else the
// in-cluster configuration of the Pod pilot runs in.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes configuration (outside a cluster, pass --kubeconfig): %w", err)
		}
		return withUserAgent(cfg), nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return withUserAgent(cfg), nil
}

func withUserAgent(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent
	// Informers list everything at start; the defaults (5 QPS) make a big cluster's first
	// sync take minutes.
	cfg.QPS, cfg.Burst = 50, 100
	return cfg
}

// Clients are the two typed clients pilot uses.
type Clients struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
}

// NewClients builds both clients from one configuration.
func NewClients(cfg *rest.Config) (*Clients, error) {
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("Kubernetes client: %w", err)
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("Istio client: %w", err)
	}
	return &Clients{Kube: kc, Istio: ic}, nil
}
