package xds

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/test/framework"
)

// lockedBuffer is a log destination that several goroutines may write while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const noIdentityWarning = "proxy can never hold a workload certificate"

// withEntry is identitySnapshot plus a WorkloadEntry stranger-1 with service account sa ("":
// none).
func withEntry(sa string) *model.Snapshot {
	snap := identitySnapshot()
	set := *snap.Config
	set.WorkloadEntries = append(set.WorkloadEntries, &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "stranger-1", Namespace: "default"},
		Spec:       networking.WorkloadEntry{Address: "127.0.0.5", ServiceAccount: sa},
	})
	return model.Build(&set)
}

// The warning for a proxy without an identity comes once per class, names the proxy and the
// reason, and comes again once the class has had an identity or left.
func TestIdentityWarningOncePerClass(t *testing.T) {
	var logs lockedBuffer
	w := newIdentityWarnings(slog.New(slog.NewTextHandler(&logs, nil)))
	proxy, err := model.ParseNodeID("sidecar~127.0.0.5~stranger-1.default~default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	class := proxy.Class()
	count := func() int { return strings.Count(logs.String(), noIdentityWarning) }

	w.check(identitySnapshot(), class, proxy)
	w.check(identitySnapshot(), class, proxy)
	if count() != 1 || !strings.Contains(logs.String(), "no Pod or WorkloadEntry named stranger-1 in namespace default") ||
		!strings.Contains(logs.String(), proxy.NodeID) {
		t.Fatalf("after two pushes without a WorkloadEntry, the log is:\n%s\nwant one warning naming the proxy and the reason", logs.String())
	}
	w.check(withEntry(""), class, proxy) // still none: no second warning
	if count() != 1 {
		t.Errorf("warned %d times while the class stayed without an identity", count())
	}
	w.check(withEntry("stranger"), class, proxy) // an identity: forgotten
	w.check(withEntry(""), class, proxy)
	if count() != 2 || !strings.Contains(logs.String(), "WorkloadEntry default/stranger-1 names no serviceAccount") {
		t.Errorf("after the identity went again, the log is:\n%s\nwant a second warning with the new reason", logs.String())
	}
	w.forget(class)
	w.check(withEntry(""), class, proxy)
	if count() != 3 {
		t.Errorf("warned %d times; want a third after the class left and came back", count())
	}
	reviews, err := model.ParseNodeID(reviewsNode)
	if err != nil {
		t.Fatal(err)
	}
	w.check(identitySnapshot(), reviews.Class(), reviews)
	if count() != 3 {
		t.Errorf("warned about reviews-v1, whose WorkloadEntry has a service account")
	}
}

// A proxy that connects without an identity is warned about by the push that serves it.
func TestIdentityWarningOnConnect(t *testing.T) {
	var logs lockedBuffer
	s, conn := serve(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	s.Push(model.Build(&config.Set{}), time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if !strings.Contains(logs.String(), noIdentityWarning) || !strings.Contains(logs.String(), testNode) {
			return fmt.Errorf("no warning about %s in:\n%s", testNode, logs.String())
		}
		return nil
	})
}
