package xds

import (
	"net/netip"

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
