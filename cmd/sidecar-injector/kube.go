package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// namespaceLabels answers inject.NamespaceLabels from an informer's cache, and from the API
// when the cache does not have the namespace yet (one created a moment ago, whose first pods
// may arrive before the watch event).
type namespaceLabels struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	lister  corelisters.NamespaceLister
	synced  cache.InformerSynced
}

func newNamespaceLabels(client kubernetes.Interface) *namespaceLabels {
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Namespaces()
	return &namespaceLabels{client: client, factory: factory, lister: inf.Lister(), synced: inf.Informer().HasSynced}
}

// start runs the informer until ctx ends.
func (n *namespaceLabels) start(ctx context.Context) { n.factory.Start(ctx.Done()) }

// ready is the readiness of the injector: it can decide once the namespaces are listed.
func (n *namespaceLabels) ready() error {
	if !n.synced() {
		return errors.New("namespace informer not synced yet")
	}
	return nil
}

func (n *namespaceLabels) lookup(ctx context.Context, name string) (map[string]string, error) {
	ns, err := n.lister.Get(name)
	if apierrors.IsNotFound(err) || (err == nil && !n.synced()) {
		ns, err = n.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", name, err)
	}
	return ns.Labels, nil
}

// caBundleRecheck is how often keepCABundle checks that the caBundle is still the CA's: an
// `kubectl apply` or Helm upgrade of the webhook configuration resets it to the manifest's.
const caBundleRecheck = time.Minute

// keepCABundle writes caPEM into the caBundle of every webhook of the
// MutatingWebhookConfiguration name, retrying with backoff until it succeeds, and then checks
// it every caBundleRecheck until ctx ends.
func keepCABundle(ctx context.Context, client kubernetes.Interface, name string, caPEM []byte, log *slog.Logger) {
	delay := time.Second
	for {
		changed, err := patchCABundle(ctx, client, name, caPEM)
		wait := caBundleRecheck
		switch {
		case err != nil:
			log.Error("cannot set the webhook caBundle: the API server cannot call the injector until it is set", "webhookConfig", name, "error", err)
			wait, delay = delay, min(2*delay, caBundleRecheck)
		case changed:
			log.Info("set the webhook caBundle to the self-managed CA", "webhookConfig", name)
			delay = time.Second
		default:
			delay = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// patchCABundle sets caPEM as the caBundle of every webhook in the configuration and says
// whether anything changed. A conflicting write is retried on a fresh copy.
func patchCABundle(ctx context.Context, client kubernetes.Interface, name string, caPEM []byte) (bool, error) {
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		changed = false
		api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
		mwc, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(mwc.Webhooks) == 0 {
			return fmt.Errorf("it has no webhooks")
		}
		for i := range mwc.Webhooks {
			if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, caPEM) {
				mwc.Webhooks[i].ClientConfig.CABundle = caPEM
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = api.Update(ctx, mwc, metav1.UpdateOptions{FieldManager: "skiff-sidecar-injector"})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("MutatingWebhookConfiguration %q: %w", name, err)
	}
	return changed, nil
}

// probePod is a minimal pod with which run checks, at start, that the sidecar configuration
// from the flags makes a valid sidecar.
func probePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}
