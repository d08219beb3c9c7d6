package xds

import (
	"log/slog"
	"net/netip"
	"sync"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Refusal reasons, the values of skiff_sds_refusals_total's reason label.
const (
	refuseNoWorkload       = "no_workload"
	refuseAddressMismatch  = "address_mismatch"
	refuseNoServiceAccount = "no_service_account"
	refuseNoCA             = "no_ca"        // pilot runs without a CA
	refuseIssueFailed      = "issue_failed" // the CA could not sign; retried on the next push
)

// checkIdentity decides which service account a proxy may hold a certificate for. Pilot never
// trusts what a proxy says about itself: the node ID only names a workload (a Pod, or a
// WorkloadEntry), and the proxy gets that workload's identity only if it connects from that
// workload's address. It returns the service account, or the reason for refusing.
func checkIdentity(snap *model.Snapshot, proxy *model.Proxy, sourceAddress string) (serviceAccount, reason string) {
	w := snap.Workload(proxy.Namespace, proxy.Name)
	if w == nil {
		return "", refuseNoWorkload
	}
	want, err := netip.ParseAddr(w.Address)
	if err != nil {
		// A DNS name or a Unix socket is no source address; a Pod without an IP is not running.
		return "", refuseAddressMismatch
	}
	got, err := netip.ParseAddr(sourceAddress)
	if err != nil || got.Unmap() != want.Unmap() {
		return "", refuseAddressMismatch
	}
	if w.ServiceAccount == "" {
		// A WorkloadEntry without one: Istio would fall back to "default"; a certificate
		// nobody asked for is worse than none. (Pods always have one.)
		return "", refuseNoServiceAccount
	}
	return w.ServiceAccount, ""
}

// identityWarnings tells the operator, once per proxy class (one workload, see
// model.Proxy.Class), that a proxy can never be issued a workload certificate
// (model.Snapshot.MayHoldIdentity), and so is translated without istiod's default mTLS: the
// operator expected PERMISSIVE and auto-mTLS, and learns why there is none. A class that gains
// an identity, or whose last proxy leaves, is forgotten, so the warning comes again if it is
// true again.
type identityWarnings struct {
	log *slog.Logger

	mu     sync.Mutex
	warned map[string]bool // classes warned about
}

func newIdentityWarnings(log *slog.Logger) *identityWarnings {
	return &identityWarnings{log: log, warned: map[string]bool{}}
}

// check warns about the class of proxy if it cannot hold an identity in snap and has not been
// warned about since it last could.
func (w *identityWarnings) check(snap *model.Snapshot, class string, proxy *model.Proxy) {
	missing := snap.MissingIdentity(proxy)
	w.mu.Lock()
	defer w.mu.Unlock()
	if missing == "" {
		delete(w.warned, class)
		return
	}
	if w.warned[class] {
		return
	}
	w.warned[class] = true
	w.log.Warn("proxy can never hold a workload certificate: without a PeerAuthentication asking for mTLS its inbound "+
		"listeners accept plaintext only (not istiod's default PERMISSIVE), and it sends no auto-mTLS",
		"proxy", proxy.NodeID, "reason", missing)
}

// forget drops a class whose last proxy disconnected.
func (w *identityWarnings) forget(class string) {
	w.mu.Lock()
	delete(w.warned, class)
	w.mu.Unlock()
}
