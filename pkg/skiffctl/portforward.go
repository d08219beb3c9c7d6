package skiffctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// KubeOptions say how to reach a cluster: a kubeconfig (or the default loading rules:
// $KUBECONFIG, ~/.kube/config) and a context in it.
type KubeOptions struct {
	Kubeconfig string
	Context    string
}

// RESTConfig is the client configuration the options name.
func (o KubeOptions) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.Context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s (context %q): %w", cmpOr(o.Kubeconfig, "(default)"), o.Context, err)
	}
	cfg.UserAgent = "skiffctl"
	return cfg, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Forward is a running port-forward to a Pod's port, served on a local address.
type Forward struct {
	// Address is the local host:port to connect to.
	Address string
	Pod     string
	stop    chan struct{}
	done    chan struct{}
}

// Close ends the port-forward.
func (f *Forward) Close() {
	close(f.stop)
	<-f.done
}

// PortForward forwards a free port of 127.0.0.1 to port of the Pod namespace/pod through the
// API server, as kubectl port-forward and istioctl do.
func PortForward(ctx context.Context, cfg *rest.Config, namespace, pod string, port int) (*Forward, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s/%s: %w", namespace, pod, err)
	}
	host, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("port-forward: API server address %q: %w", cfg.Host, err)
	}
	host.Path = strings.TrimSuffix(host.Path, "/") + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, host)
	f := &Forward{Pod: namespace + "/" + pod, stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, f.stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	}
	errs := make(chan error, 1)
	go func() {
		defer close(f.done)
		errs <- pf.ForwardPorts()
	}()
	select {
	case <-ready:
	case err := <-errs:
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	case <-ctx.Done():
		close(f.stop)
		<-f.done
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, ctx.Err())
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		f.Close()
		return nil, fmt.Errorf("port-forward to %s/%s:%d: no local port: %v", namespace, pod, port, err)
	}
	f.Address = fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	return f, nil
}

// PilotService is the Service deploy/pilot installs, and MonitoringPort its monitoring port.
const (
	PilotService   = "skiff-pilot"
	MonitoringPort = 15014
	EnvoyAdminPort = 15000
)

// PilotPods lists the running Pods behind the pilot Service of namespace, with the port their
// monitoring port forwards to.
func PilotPods(ctx context.Context, kc kubernetes.Interface, namespace string) ([]corev1.Pod, int, error) {
	svc, err := kc.CoreV1().Services(namespace).Get(ctx, PilotService, metav1.GetOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("pilot Service %s/%s: %w", namespace, PilotService, err)
	}
	target := MonitoringPort
	for _, p := range svc.Spec.Ports {
		if p.Port == MonitoringPort && p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal != 0 {
			target = int(p.TargetPort.IntVal)
		}
	}
	pods, err := kc.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return nil, 0, fmt.Errorf("pods of Service %s/%s: %w", namespace, PilotService, err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, 0, fmt.Errorf("no running pod behind Service %s/%s (selector %v)", namespace, PilotService, svc.Spec.Selector)
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out, target, nil
}
