package kubemesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"

	"github.com/skiffmesh/skiff/test/framework"
)

// fakeKubelet is the port-forward half of a kubelet, for a Node the test creates: the API
// server proxies `kubectl port-forward` (and skiffctl's, through client-go) to the kubelet of
// the Pod's node over SPDY, and the kubelet connects each stream to the Pod's port. Here a
// Pod's port is whatever address the test maps it to. The API server does not verify the
// kubelet's certificate unless --kubelet-certificate-authority is set, which the harness does
// not set.
type fakeKubelet struct {
	Node string

	mu      sync.Mutex
	targets map[string]string // "NAMESPACE/POD:PORT" → address
	// Forwarded counts the connections made to Pods.
	Forwarded atomic.Int64
}

var nodeCount atomic.Int64

// startFakeKubelet serves port-forwards on 127.0.0.1 and registers a Node whose kubelet it
// is; both go when the test ends.
func startFakeKubelet(t *testing.T) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{Node: fmt.Sprintf("skiffctl-node-%d", nodeCount.Add(1)), targets: map[string]string{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	srv.EnableHTTP2 = false // SPDY upgrades an HTTP/1.1 connection
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, portText, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portText)

	node, err := cluster.Kube.CoreV1().Nodes().Create(ctx(t), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.Node}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Node %s: %v", k.Node, err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), framework.Patience)
		defer cancel()
		_ = cluster.Kube.CoreV1().Nodes().Delete(c, k.Node, metav1.DeleteOptions{})
	})
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	if _, err := cluster.Kube.CoreV1().Nodes().UpdateStatus(ctx(t), node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting the status of Node %s: %v", k.Node, err)
	}
	return k
}

// forward makes port of Pod namespace/pod reach address.
func (k *fakeKubelet) forward(namespace, pod string, port int, address string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.targets[fmt.Sprintf("%s/%s:%d", namespace, pod, port)] = address
}

// serve answers POST /portForward/NAMESPACE/POD as the kubelet does: it upgrades to SPDY and
// pairs each port's data and error streams by request ID.
func (k *fakeKubelet) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "portForward" {
		http.Error(w, "the fake kubelet serves port-forwards only", http.StatusNotFound)
		return
	}
	pod := parts[1] + "/" + parts[2]
	if _, err := httpstream.Handshake(r, w, []string{"portforward.k8s.io"}); err != nil {
		return // Handshake answered
	}
	streams := make(chan httpstream.Stream, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	conn.SetIdleTimeout(time.Minute)
	type pair struct{ data, errs httpstream.Stream }
	pairs := map[string]*pair{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case s := <-streams:
			id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
			p := pairs[id]
			if p == nil {
				p = &pair{}
				pairs[id] = p
			}
			switch s.Headers().Get(corev1.StreamType) {
			case corev1.StreamTypeData:
				p.data = s
			case corev1.StreamTypeError:
				p.errs = s
			}
			if p.data != nil && p.errs != nil {
				delete(pairs, id)
				go k.connect(pod, p.data, p.errs)
			}
		}
	}
}

// connect joins a data stream to the address the Pod's port maps to; a failure is written
// on the error stream, where client-go reads it.
func (k *fakeKubelet) connect(pod string, data, errs httpstream.Stream) {
	defer errs.Close()
	defer data.Close()
	port := data.Headers().Get(corev1.PortHeader)
	k.mu.Lock()
	address, ok := k.targets[pod+":"+port]
	k.mu.Unlock()
	if !ok {
		fmt.Fprintf(errs, "pod %s has nothing on port %s", pod, port)
		return
	}
	c, err := net.Dial("tcp", address)
	if err != nil {
		fmt.Fprintf(errs, "pod %s port %s: %v", pod, port, err)
		return
	}
	defer c.Close()
	k.Forwarded.Add(1)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(c, data); done <- struct{}{} }()
	go func() { _, _ = io.Copy(data, c); done <- struct{}{} }()
	<-done
}
