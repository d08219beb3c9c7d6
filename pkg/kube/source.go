package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Options configure a Source.
type Options struct {
	Logger *slog.Logger
	// OnChange receives every new configuration, from one goroutine: the objects that passed
	// validation (or the last good version of those that no longer do) and the problems.
	// changedAt is when the first change of the burst arrived, for the convergence metric.
	OnChange func(set *config.Set, errs []*config.Error, changedAt time.Time)
	// Quiet and MaxDelay debounce bursts of events (defaults 100 ms and 1 s, as for folders).
	Quiet, MaxDelay time.Duration
	// Mesh says where the mesh configuration comes from.
	Mesh MeshOptions
}

// MeshOptions locate the mesh configuration: the ConfigMap istio (key mesh) in Namespace,
// istiod's, applied over Base (Skiff's defaults); Default while there is no such ConfigMap.
type MeshOptions struct {
	Namespace     string
	Base, Default *meshconfig.MeshConfig
}

// Source watches the API server and reports configuration changes.
type Source struct {
	opts    Options
	log     *slog.Logger
	core    informers.SharedInformerFactory
	mesh    istioinformers.SharedInformerFactory
	stores  []cache.SharedIndexInformer // everything but Secrets, which secretWatcher owns
	secrets *secretWatcher
	// meshFactory and meshMap watch the ConfigMap istio of the control plane's namespace.
	meshFactory informers.SharedInformerFactory
	meshMap     cache.SharedIndexInformer
	events      chan struct{}

	mu        sync.Mutex
	changedAt time.Time // first event of the pending burst; zero when none is pending
	lastGood  map[string]config.Object
	// received counts the events (changes) pilot has been told of, reported how many of them
	// the last report had seen: Settle waits until reported reaches what received was when it
	// was called.
	received, reported uint64
	// lastMesh is the last mesh configuration that parsed, with the ConfigMap's UID and
	// resourceVersion: an unchanged ConfigMap is not parsed again, and keeps its pointer.
	lastMesh        *meshconfig.MeshConfig
	lastMeshUID     types.UID
	lastMeshVersion string
}

// NewSource prepares the informers; Run starts them.
func NewSource(clients *Clients, opts Options) *Source {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Quiet == 0 {
		opts.Quiet = 100 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = time.Second
	}
	s := &Source{
		opts:     opts,
		log:      opts.Logger,
		core:     informers.NewSharedInformerFactoryWithOptions(clients.Kube, 0, informers.WithTransform(dropManagedFields)),
		mesh:     istioinformers.NewSharedInformerFactoryWithOptions(clients.Istio, 0, istioinformers.WithTransform(dropManagedFields)),
		events:   make(chan struct{}, 1),
		lastGood: map[string]config.Object{},
	}
	s.secrets = newSecretWatcher(clients.Kube, s.changed, s.log)
	net, sec := s.mesh.Networking().V1(), s.mesh.Security().V1()
	s.stores = []cache.SharedIndexInformer{
		s.core.Core().V1().Namespaces().Informer(),
		s.core.Core().V1().Services().Informer(),
		s.core.Discovery().V1().EndpointSlices().Informer(),
		s.core.Core().V1().Pods().Informer(),
		net.ServiceEntries().Informer(),
		net.WorkloadEntries().Informer(),
		net.VirtualServices().Informer(),
		net.DestinationRules().Informer(),
		net.Gateways().Informer(),
		net.Sidecars().Informer(),
		sec.PeerAuthentications().Informer(),
		sec.AuthorizationPolicies().Informer(),
		s.mesh.Telemetry().V1().Telemetries().Informer(),
	}
	if opts.Mesh.Namespace != "" {
		s.meshFactory = informers.NewSharedInformerFactoryWithOptions(clients.Kube, 0,
			informers.WithNamespace(opts.Mesh.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = "metadata.name=" + config.MeshConfigMapName
			}),
			informers.WithTransform(dropManagedFields))
		s.meshMap = s.meshFactory.Core().V1().ConfigMaps().Informer()
	}
	for _, inf := range s.watched() {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { s.changed() },
			UpdateFunc: func(old, cur any) {
				if relevantUpdate(old, cur) {
					s.changed()
				}
			},
			DeleteFunc: func(any) { s.changed() },
		})
	}
	return s
}

// Namespaces is the namespace informer, shared with the root certificate publisher.
func (s *Source) Namespaces() cache.SharedIndexInformer {
	return s.core.Core().V1().Namespaces().Informer()
}

// Run starts the informers, reports the first complete configuration once every informer has
// synced, then reports changes until ctx ends. While the API server is unreachable the
// informers retry on their own and nothing is reported, so pilot keeps serving what it has.
func (s *Source) Run(ctx context.Context) error {
	s.core.Start(ctx.Done())
	s.mesh.Start(ctx.Done())
	defer s.core.Shutdown()
	defer s.mesh.Shutdown()
	if s.meshFactory != nil {
		s.meshFactory.Start(ctx.Done())
		defer s.meshFactory.Shutdown()
		for typ, ok := range s.meshFactory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("Kubernetes informer for %v (mesh configuration) did not sync: %w", typ, context.Cause(ctx))
			}
		}
	}
	defer s.secrets.stopAll()
	for typ, ok := range s.core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("Kubernetes informer for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for typ, ok := range s.mesh.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("Istio informer for %v did not sync (are the CRDs installed?): %w", typ, context.Cause(ctx))
		}
	}
	// The first report also decides which Secrets to watch; their informers report again
	// once they have synced.
	s.report()
	config.Debounce(ctx, s.opts.Quiet, s.opts.MaxDelay, s.events, s.report)
	return nil
}

// changed notes an event; Run's debouncer turns bursts into one report.
func (s *Source) changed() {
	s.mu.Lock()
	if s.changedAt.IsZero() {
		s.changedAt = time.Now()
	}
	s.received++
	s.mu.Unlock()
	select {
	case s.events <- struct{}{}:
	default:
	}
}

func (s *Source) report() {
	s.mu.Lock()
	changedAt, seen := s.changedAt, s.received
	s.changedAt = time.Time{}
	s.mu.Unlock()
	if changedAt.IsZero() {
		changedAt = time.Now()
	}
	set, errs := s.Current()
	s.secrets.watch(referencedSecrets(set))
	s.opts.OnChange(set, errs, changedAt)
	s.mu.Lock()
	s.reported = seen // events since the report began wait for the next one
	s.mu.Unlock()
}

// Received is how many changes pilot has been told of by the API server's watches (the
// skiff_kube_events_total counter).
func (s *Source) Received() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// settlePoll is how often Settle looks whether the pending changes are reported.
const settlePoll = 10 * time.Millisecond

// Settle returns once every change pilot has been told of before the call is reported
// (handed to OnChange), or with ctx's error. The debounce holds a burst back for a while: a
// `kubectl apply` followed by a wait (`skiffctl wait`) must not find pilot in sync with the
// configuration from before the apply while the apply's event sits in the debounce.
func (s *Source) Settle(ctx context.Context) error {
	s.mu.Lock()
	target := s.received
	s.mu.Unlock()
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	for {
		s.mu.Lock()
		done := s.reported >= target
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a change received from the API server is not loaded yet: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Current builds the configuration from the informers' caches. Istio objects are validated as
// the folder loader validates them; one that fails is replaced by its last good version, if
// the same object (same UID) was ever good, so that a bad edit never removes configuration.
func (s *Source) Current() (*config.Set, []*config.Error) {
	var (
		objects []config.Object
		errs    []*config.Error
	)
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, inf := range s.stores {
		for _, item := range inf.GetStore().List() {
			obj, ok := item.(config.Object)
			if !ok {
				continue
			}
			if isKubernetesKind(obj) {
				// The API server validated these, and a Pod's odd field is not ours to judge.
				objects = append(objects, obj)
				continue
			}
			key := objectKey(obj)
			seen[key] = true
			if err := config.Validate(obj); err != nil {
				errs = append(errs, config.Errors(err)...)
				if good := s.lastGood[key]; good != nil && good.GetUID() == obj.GetUID() {
					objects = append(objects, good)
				}
				continue
			}
			s.lastGood[key] = obj
			objects = append(objects, obj)
		}
	}
	for _, key := range slices.Collect(maps.Keys(s.lastGood)) {
		if !seen[key] {
			delete(s.lastGood, key) // deleted objects take their last good version with them
		}
	}
	for _, sec := range s.secrets.list() {
		if err := config.Validate(sec); err != nil {
			errs = append(errs, config.Errors(err)...)
			continue
		}
		objects = append(objects, sec)
	}
	set := config.NewSet(objects...)
	var meshErr *config.Error
	set.Mesh, meshErr = s.meshConfig()
	if meshErr != nil {
		errs = append(errs, meshErr)
	}
	return set, errs
}

// watched are the informers whose events trigger a report.
func (s *Source) watched() []cache.SharedIndexInformer {
	if s.meshMap == nil {
		return s.stores
	}
	return append(slices.Clone(s.stores), s.meshMap)
}

// meshConfig is the mesh configuration of the ConfigMap istio, or the default without one.
// A ConfigMap that does not parse is reported, and its last good version (of the same
// ConfigMap) stays in force, as for other objects. s.mu is held.
func (s *Source) meshConfig() (*meshconfig.MeshConfig, *config.Error) {
	if s.meshMap == nil {
		return s.opts.Mesh.Default, nil
	}
	var cm *corev1.ConfigMap
	for _, item := range s.meshMap.GetStore().List() {
		if c, ok := item.(*corev1.ConfigMap); ok && c.Name == config.MeshConfigMapName {
			cm = c
		}
	}
	if cm == nil {
		s.lastMesh, s.lastMeshUID, s.lastMeshVersion = nil, "", ""
		return s.opts.Mesh.Default, nil
	}
	if s.lastMesh != nil && s.lastMeshUID == cm.UID && s.lastMeshVersion == cm.ResourceVersion {
		return s.lastMesh, nil
	}
	mesh, err := config.ParseMeshConfig([]byte(cm.Data[config.MeshConfigKey]), s.opts.Mesh.Base)
	if err != nil {
		cerr := &config.Error{Doc: -1, Kind: "ConfigMap", Namespace: cm.Namespace, Name: cm.Name,
			Field: "data." + config.MeshConfigKey, Err: err}
		if s.lastMesh != nil && s.lastMeshUID == cm.UID {
			return s.lastMesh, cerr
		}
		return s.opts.Mesh.Default, cerr
	}
	s.lastMesh, s.lastMeshUID, s.lastMeshVersion = mesh, cm.UID, cm.ResourceVersion
	return mesh, nil
}

func isKubernetesKind(o config.Object) bool {
	switch config.KindOf(o) {
	case "Namespace", "Service", "EndpointSlice", "Pod":
		return true
	}
	return false
}

func objectKey(o config.Object) string {
	return fmt.Sprintf("%s/%s/%s", config.KindOf(o), o.GetNamespace(), o.GetName())
}

// relevantUpdate filters the updates that cannot change configuration. Pods change status
// all the time (conditions, container states); only their labels, IP, service account and
// deletion matter. Other kinds count when their resourceVersion changed (a re-list delivers
// unchanged objects as updates too).
func relevantUpdate(old, cur any) bool {
	op, ok1 := old.(*corev1.Pod)
	cp, ok2 := cur.(*corev1.Pod)
	if ok1 && ok2 {
		return op.Status.PodIP != cp.Status.PodIP || op.Spec.ServiceAccountName != cp.Spec.ServiceAccountName ||
			!maps.Equal(op.Labels, cp.Labels) || !maps.Equal(op.Annotations, cp.Annotations) ||
			(op.DeletionTimestamp == nil) != (cp.DeletionTimestamp == nil)
	}
	om, ok1 := old.(metav1.Object)
	cm, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || om.GetResourceVersion() != cm.GetResourceVersion()
}

// dropManagedFields strips server-side apply bookkeeping before objects enter the caches: it
// is often the largest part of an object and nothing in pilot reads it.
func dropManagedFields(obj any) (any, error) {
	if acc, ok := obj.(metav1.ObjectMetaAccessor); ok {
		acc.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}
