package xds

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/model"
)

// The SDS names Istio proxies ask for: their own workload certificate and the mesh's trust
// bundle.
const (
	workloadSecretName = "default"
	rootSecretName     = "ROOTCA"
)

// isProxySecret reports whether an SDS name is per proxy (served from the stream's own cache)
// rather than per class (a gateway's kubernetes:// credential).
func isProxySecret(name string) bool { return name == workloadSecretName || name == rootSecretName }

// sdsServer serves the per-proxy secrets. Proxies of one class share listeners and clusters but
// not identities, so these secrets never go into the class caches: every stream that asks for
// `default` or `ROOTCA` gets its own LinearCache, created on its first such watch and dropped
// when the stream closes. That cache also mirrors the class's kubernetes:// secrets, because in
// state of the world one watch carries every Secret name the proxy wants.
//
// Envoy rejects a state-of-the-world SDS response without the secret it asked for, so a proxy
// refused its `default` certificate is never answered for it: its watch stays open (parked here
// when the cache holds nothing it asked for), and Envoy keeps warming whatever needs the
// secret while everything else works.
type sdsServer struct {
	ca            *ca.CA // nil: no CA, so nothing per proxy is served
	ttl           time.Duration
	versionPrefix string
	log           *slog.Logger
	refusals      *prometheus.CounterVec
	// snapshot returns the configuration being served, nil before the first push.
	snapshot func() *model.Snapshot
	// classSecrets returns the current kubernetes:// secrets of a class, nil if not translated.
	classSecrets func(class string) map[string]types.Resource
	// setIdentity shows the outcome of the identity check in the stream's status.
	setIdentity func(streamID int64, identity string)

	mu      sync.Mutex
	streams map[int64]*streamSecrets
}

// streamSecrets is one stream's SDS state.
type streamSecrets struct {
	id      int64
	proxy   *model.Proxy
	class   string // proxy.Class(), computed once: syncClass compares it on every push
	address string // the connection's source IP, the only thing identity is checked against
	lc      *cachev3.LinearCache

	classSecrets map[string]types.Resource // the class's kubernetes:// secrets
	own          map[string]types.Resource // ROOTCA and, once granted, default
	identity     string                    // the SPIFFE ID granted, or "refused: REASON"
	workload     *ca.Workload              // the certificate served as default; never logged
	rotate       *time.Timer
	// rotateDue asks the next identity check for a new certificate even if the identity is
	// unchanged: the current one reached half-life.
	rotateDue bool
	parked    map[*parkedWatch]struct{}
	closed    bool
}

func newSDSServer(c *ca.CA, ttl time.Duration, versionPrefix string, log *slog.Logger, reg prometheus.Registerer) *sdsServer {
	if ttl <= 0 {
		ttl = ca.DefaultWorkloadTTL
	}
	s := &sdsServer{
		ca: c, ttl: ttl, versionPrefix: versionPrefix, log: log,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_sds_refusals_total",
			Help: "Workload certificates (SDS default) refused because the proxy failed the identity check, by reason.",
		}, []string{"reason"}),
		streams: map[int64]*streamSecrets{},
	}
	reg.MustRegister(s.refusals)
	return s
}

// watch opens a watch that names a per-proxy secret on the stream's own cache.
func (s *sdsServer) watch(streamID int64, address string, proxy *model.Proxy, w *parkedWatch) (func(), error) {
	s.mu.Lock()
	st, ok := s.streams[streamID]
	if !ok {
		st = &streamSecrets{
			id: streamID, proxy: proxy, class: proxy.Class(), address: address,
			lc:     cachev3.NewLinearCache(resourcev3.SecretType, cachev3.WithVersionPrefix(s.versionPrefix)),
			own:    map[string]types.Resource{},
			parked: map[*parkedWatch]struct{}{},
		}
		s.streams[streamID] = st
		if s.classSecrets != nil {
			st.classSecrets = s.classSecrets(st.class)
		}
		s.resolveLocked(st, s.currentSnapshot())
	}
	if w.request != nil && !st.holdsAny(w.request.GetResourceNames()) {
		// A state-of-the-world watch would be answered empty, which Envoy NACKs: hold it until
		// the cache has something it asked for.
		st.parked[w] = struct{}{}
		s.mu.Unlock()
		return func() { s.cancelParked(st, w) }, nil
	}
	s.mu.Unlock()
	if w.sub != nil {
		w.sub = knownResources{w.sub}
	}
	return w.start(st.lc)
}

// knownResources is a stream's subscription as go-control-plane's LinearCache, which serves a
// stream's own secrets, needs it: ReturnedResources never nil. The server records there what
// the stream's last response of the type returned, and the class stores' state-of-the-world
// responses return nil (their version says what the client holds), so a Secret watch that
// first named only a gateway's kubernetes:// secrets and then ROOTCA or default too (a
// Gateway gaining an ISTIO_MUTUAL server) had LinearCache write into a nil map: a panic that
// ended pilot.
type knownResources struct{ cachev3.Subscription }

func (k knownResources) ReturnedResources() map[string]string {
	if r := k.Subscription.ReturnedResources(); r != nil {
		return r
	}
	return map[string]string{}
}

func (s *sdsServer) currentSnapshot() *model.Snapshot {
	if s.snapshot == nil {
		return nil
	}
	return s.snapshot()
}

func (st *streamSecrets) holdsAny(names []string) bool {
	have := st.lc.GetResources()
	for _, n := range names {
		if _, ok := have[n]; ok {
			return true
		}
	}
	return false
}

func (s *sdsServer) cancelParked(st *streamSecrets, w *parkedWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(st.parked, w)
	if w.cancel != nil {
		w.cancel()
	}
}

// resolveLocked runs the identity check against snap and brings the stream's cache in line:
// ROOTCA always (it is public), default only for a granted identity, re-issued when the
// identity changes and on its rotation timer.
func (s *sdsServer) resolveLocked(st *streamSecrets, snap *model.Snapshot) {
	if st.closed {
		return
	}
	if s.ca != nil {
		st.own[rootSecretName] = &tlsv3.Secret{Name: rootSecretName, Type: &tlsv3.Secret_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: s.ca.RootPEM()}},
			},
		}}
	}
	var (
		id     string
		reason string
	)
	switch {
	case s.ca == nil:
		reason = refuseNoCA
	case snap == nil:
		reason = "" // no configuration yet: decided on the first push
	default:
		var sa string
		sa, reason = checkIdentity(snap, st.proxy, st.address)
		if reason == "" {
			id = s.ca.SPIFFEID(st.proxy.Namespace, sa)
			if st.workload == nil || st.workload.SPIFFEID != id || st.rotateDue {
				if err := s.issueLocked(st, sa); err != nil {
					s.log.Error("issuing workload certificate", "proxy", st.proxy.NodeID, "error", err)
					id, reason = "", refuseIssueFailed
				}
			}
		}
	}
	if id == "" {
		s.revokeLocked(st)
	}
	identity := id
	if reason != "" {
		identity = "refused: " + reason
	}
	if identity != st.identity && identity != "" {
		if reason != "" {
			s.refusals.WithLabelValues(reason).Inc()
			attrs := []any{"proxy", st.proxy.NodeID, "reason", reason, "source_address", st.address}
			if reason == refuseAddressMismatch && snap != nil {
				// Say what the check compared, so a proxy that connects from the wrong address
				// (a missing upstream bind, say) is told apart from one naming the wrong workload.
				w := snap.Workload(st.proxy.Namespace, st.proxy.Name)
				attrs = append(attrs, "workload", w.Source(), "expected_address", cmp.Or(w.Address, "none (not running)"))
			}
			s.log.Warn("refusing workload certificate", attrs...)
		}
		st.identity = identity
		if s.setIdentity != nil {
			s.setIdentity(st.id, identity)
		}
	}
	s.syncLocked(st)
}

// issueLocked issues a certificate for the stream's identity and schedules its rotation at
// half-life, as Istio's agent does, so a proxy never holds an expired certificate even if one
// rotation is late.
func (s *sdsServer) issueLocked(st *streamSecrets, sa string) error {
	now := time.Now()
	w, err := s.ca.Issue(st.proxy.Namespace, sa, s.ttl, now)
	if err != nil {
		return fmt.Errorf("proxy %s: %w", st.proxy.NodeID, err)
	}
	if st.workload == nil || st.workload.SPIFFEID != w.SPIFFEID {
		s.log.Info("workload certificate granted", "proxy", st.proxy.NodeID, "identity", w.String())
	} else {
		s.log.Debug("workload certificate rotated", "proxy", st.proxy.NodeID, "identity", w.String())
	}
	st.workload, st.rotateDue = w, false
	st.own[workloadSecretName] = &tlsv3.Secret{Name: workloadSecretName, Type: &tlsv3.Secret_TlsCertificate{
		TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: w.ChainPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: w.KeyPEM}},
		},
	}}
	if st.rotate != nil {
		st.rotate.Stop()
	}
	st.rotate = time.AfterFunc(w.NotAfter.Sub(now)/2, func() { s.rotate(st) })
	return nil
}

func (s *sdsServer) revokeLocked(st *streamSecrets) {
	// State of the world cannot take a secret back; the proxy keeps its old certificate until
	// it expires, but never gets a fresh one.
	delete(st.own, workloadSecretName)
	st.workload, st.rotateDue = nil, false
	if st.rotate != nil {
		st.rotate.Stop()
		st.rotate = nil
	}
}

// rotate re-checks and re-issues a certificate at half-life.
func (s *sdsServer) rotate(st *streamSecrets) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.closed {
		return
	}
	st.rotateDue = true
	s.resolveLocked(st, s.currentSnapshot())
}

// syncLocked makes the stream's cache hold the class's secrets and its own, and replays the
// parked watches that now have something to be answered with.
func (s *sdsServer) syncLocked(st *streamSecrets) {
	want := make(map[string]types.Resource, len(st.classSecrets)+len(st.own))
	maps.Copy(want, st.classSecrets)
	maps.Copy(want, st.own)
	if _, err := updateLinear(st.lc, want); err != nil {
		s.log.Error("updating per-proxy secrets", "proxy", st.proxy.NodeID, "error", err)
	}
	for w := range st.parked {
		if !st.holdsAny(w.request.GetResourceNames()) {
			continue
		}
		delete(st.parked, w)
		cancel, err := w.start(st.lc)
		if err != nil {
			s.log.Error("replaying SDS watch", "proxy", st.proxy.NodeID, "error", err)
			continue
		}
		w.cancel = cancel
	}
}

// recheck runs the identity check of every stream against a new snapshot: a WorkloadEntry
// that moved or changed service account changes what its proxy may hold.
func (s *sdsServer) recheck(snap *model.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		s.resolveLocked(st, snap)
	}
}

// syncClass mirrors a class's translated secrets into its streams' caches.
func (s *sdsServer) syncClass(class string, secrets map[string]types.Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if st.class == class {
			st.classSecrets = secrets
			s.syncLocked(st)
		}
	}
}

// drop forgets a closed stream: its key goes with it.
func (s *sdsServer) drop(streamID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[streamID]
	if !ok {
		return
	}
	st.closed = true
	if st.rotate != nil {
		st.rotate.Stop()
	}
	st.workload = nil
	clear(st.own)
	clear(st.parked)
	delete(s.streams, streamID)
}

// secretsOf returns the per-proxy secrets served on a stream of nodeID, for the config dump.
func (s *sdsServer) secretsOf(nodeID string) map[string]types.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if st.proxy.NodeID == nodeID {
			return maps.Clone(st.own)
		}
	}
	return nil
}

// errNoStream is returned when a Secret watch cannot be tied to its stream, which would be a
// bug in how requests reach the cache.
var errNoStream = errors.New("SDS request not tied to a stream")
