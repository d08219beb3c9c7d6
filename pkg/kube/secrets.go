package kube

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// Pilot reads only the Secrets that Gateways name. Watching every Secret in the cluster would
// put every service account token and database password into pilot's memory; instead each
// referenced Secret gets an informer of its own, restricted by a field selector to that one
// name in that one namespace, started when a Gateway starts naming it and stopped when none
// does. The private keys they hold go to the gateway proxy over SDS and nowhere else.

// secretRef is NAMESPACE/NAME of a Secret.
type secretRef struct{ namespace, name string }

// secretWatcher keeps one single-Secret informer per referenced Secret.
type secretWatcher struct {
	client  kubernetes.Interface
	changed func()
	log     *slog.Logger

	mu       sync.Mutex
	watchers map[secretRef]*singleSecret
}

type singleSecret struct {
	informer cache.SharedIndexInformer
	stop     context.CancelFunc
}

func newSecretWatcher(client kubernetes.Interface, changed func(), log *slog.Logger) *secretWatcher {
	return &secretWatcher{client: client, changed: changed, log: log, watchers: map[secretRef]*singleSecret{}}
}

// watch makes the watched Secrets exactly refs.
func (w *secretWatcher) watch(refs map[secretRef]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ref, ss := range w.watchers {
		if !refs[ref] {
			ss.stop()
			delete(w.watchers, ref)
			w.log.Info("no longer watching Secret: no Gateway names it", "secret", ref.namespace+"/"+ref.name)
		}
	}
	for ref := range refs {
		if w.watchers[ref] != nil {
			continue
		}
		factory := informers.NewSharedInformerFactoryWithOptions(w.client, 0,
			informers.WithNamespace(ref.namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.name).String()
			}),
			informers.WithTransform(dropManagedFields))
		inf := factory.Core().V1().Secrets().Informer()
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { w.changed() },
			UpdateFunc: func(old, cur any) { w.changedIf(relevantUpdate(old, cur)) },
			DeleteFunc: func(any) { w.changed() },
		})
		ctx, stop := context.WithCancel(context.Background())
		factory.Start(ctx.Done())
		w.watchers[ref] = &singleSecret{informer: inf, stop: func() { stop(); factory.Shutdown() }}
		w.log.Info("watching Secret named by a Gateway", "secret", ref.namespace+"/"+ref.name)
	}
}

func (w *secretWatcher) changedIf(ok bool) {
	if ok {
		w.changed()
	}
}

// list returns the watched Secrets that exist, sorted by namespace and name.
func (w *secretWatcher) list() []*corev1.Secret {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*corev1.Secret
	for _, ref := range slices.SortedFunc(maps.Keys(w.watchers), compareRefs) {
		for _, item := range w.watchers[ref].informer.GetStore().List() {
			if s, ok := item.(*corev1.Secret); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func compareRefs(a, b secretRef) int {
	return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
}

func (w *secretWatcher) stopAll() { w.watch(nil) }

// referencedSecrets are the Secrets the set's Gateways name, in every namespace where a
// proxy they select runs (credentials are looked up in the gateway proxy's namespace, as in
// istiod), and in the Gateway's own namespace, where they usually are.
func referencedSecrets(set *config.Set) map[secretRef]bool {
	refs := map[secretRef]bool{}
	for _, gw := range set.Gateways {
		var names []string
		for _, srv := range gw.Spec.Servers {
			names = append(names, translate.CredentialSecretNames(srv.GetTls())...)
		}
		if len(names) == 0 {
			continue
		}
		namespaces := map[string]bool{gw.Namespace: true}
		if sel := gw.Spec.Selector; len(sel) > 0 {
			selector := labels.SelectorFromSet(sel)
			for _, pod := range set.Pods {
				if selector.Matches(labels.Set(pod.Labels)) {
					namespaces[pod.Namespace] = true
				}
			}
		}
		for ns := range namespaces {
			for _, n := range names {
				refs[secretRef{ns, n}] = true
			}
		}
	}
	return refs
}
