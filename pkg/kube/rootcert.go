package kube

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Istio publishes its root certificate as a ConfigMap in every namespace, which sidecars mount
// to verify the control plane and each other. Pilot does the same with its own root, and puts
// it back whenever someone edits or deletes it.
const (
	RootCertConfigMap = "istio-ca-root-cert"
	RootCertKey       = "root-cert.pem"
)

// RootPublisher keeps RootCertConfigMap in every namespace equal to the root.
type RootPublisher struct {
	client     kubernetes.Interface
	rootPEM    string
	log        *slog.Logger
	namespaces cache.SharedIndexInformer
	configMaps cache.SharedIndexInformer
	factory    informers.SharedInformerFactory
	queue      workqueue.TypedRateLimitingInterface[string]
}

// NewRootPublisher publishes rootPEM to every namespace the informer knows. The ConfigMaps are
// watched with a field selector on their name, so pilot never reads other ConfigMaps.
func NewRootPublisher(client kubernetes.Interface, namespaces cache.SharedIndexInformer, rootPEM []byte, log *slog.Logger) *RootPublisher {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", RootCertConfigMap).String()
		}),
		informers.WithTransform(dropManagedFields))
	p := &RootPublisher{
		client: client, rootPEM: string(rootPEM), log: log, namespaces: namespaces,
		configMaps: factory.Core().V1().ConfigMaps().Informer(), factory: factory,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "root-cert-publisher"}),
	}
	enqueueNamespace := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	_, _ = namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNamespace,
		UpdateFunc: func(_, cur any) { enqueueNamespace(cur) },
	})
	enqueueConfigMap := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			p.queue.Add(cm.Namespace)
		}
	}
	_, _ = p.configMaps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, cur any) { enqueueConfigMap(cur) },
		DeleteFunc: enqueueConfigMap,
	})
	return p
}

// Run publishes until ctx ends. The namespace informer must be started by its owner.
func (p *RootPublisher) Run(ctx context.Context) {
	defer p.queue.ShutDown()
	p.factory.Start(ctx.Done())
	defer p.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), p.namespaces.HasSynced, p.configMaps.HasSynced) {
		return
	}
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	for p.next(ctx) {
	}
}

func (p *RootPublisher) next(ctx context.Context) bool {
	ns, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(ns)
	if err := p.publish(ctx, ns); err != nil {
		p.log.Warn("publishing the root certificate; will retry", "namespace", ns, "configmap", RootCertConfigMap, "error", err)
		p.queue.AddRateLimited(ns)
		return true
	}
	p.queue.Forget(ns)
	return true
}

// publish makes RootCertConfigMap in ns hold the root.
func (p *RootPublisher) publish(ctx context.Context, ns string) error {
	obj, exists, err := p.namespaces.GetStore().GetByKey(ns)
	if err != nil || !exists {
		return err // a deleted namespace takes its ConfigMap with it
	}
	if n, ok := obj.(*corev1.Namespace); ok && n.Status.Phase == corev1.NamespaceTerminating {
		return nil // creating objects in a terminating namespace is refused
	}
	item, exists, err := p.configMaps.GetStore().GetByKey(ns + "/" + RootCertConfigMap)
	if err != nil {
		return err
	}
	maps := p.client.CoreV1().ConfigMaps(ns)
	if !exists {
		_, err := maps.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: ns,
				Labels: map[string]string{"istio.io/config": "true", "app.kubernetes.io/managed-by": "skiff"}},
			Data: map[string]string{RootCertKey: p.rootPEM},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("created by someone else meanwhile: %w", err) // retried with the informer's copy
		}
		if err == nil {
			p.log.Info("published the root certificate", "namespace", ns, "configmap", RootCertConfigMap)
		}
		return err
	}
	cm := item.(*corev1.ConfigMap)
	if cm.Data[RootCertKey] == p.rootPEM {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootCertKey] = p.rootPEM
	if _, err := maps.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return err
	}
	p.log.Info("restored the root certificate", "namespace", ns, "configmap", RootCertConfigMap)
	return nil
}
