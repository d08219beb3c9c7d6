package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffmesh/skiff/pkg/ca"
)

// In Kubernetes the CA lives in a Secret of the control-plane namespace, in Istio's cacerts
// layout, so every pilot replica and every restart signs with the same root. An operator's
// own CA goes into Secret `cacerts` (Istio's plugged-in CA), which wins when present.

// PluggedInCASecret is Istio's Secret for an operator-provided CA.
const PluggedInCASecret = "cacerts"

// LoadOrCreateCA reads the CA from Secret `cacerts` or name in namespace, creating name with
// a new self-signed root when neither exists. Replicas starting together race on the create:
// the API server lets one win, and the others read the winner's Secret, so all end with one
// root. Transient API errors are retried for up to a minute, since pilot may start before
// the API server is reachable.
func LoadOrCreateCA(ctx context.Context, client kubernetes.Interface, namespace, name, trustDomain string, log *slog.Logger) (*ca.CA, error) {
	var authority *ca.CA
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Steps: 12, Cap: 10 * time.Second},
		func(ctx context.Context) (bool, error) {
			var err error
			authority, err = loadOrCreateCA(ctx, client, namespace, name, trustDomain, log)
			switch {
			case err == nil:
				return true, nil
			case isTransient(err):
				log.Warn("reading the CA Secret; retrying", "secret", namespace+"/"+name, "error", err)
				return false, nil
			default:
				return false, err
			}
		})
	if err != nil {
		return nil, fmt.Errorf("CA Secret %s/%s: %w", namespace, name, err)
	}
	return authority, nil
}

func loadOrCreateCA(ctx context.Context, client kubernetes.Interface, namespace, name, trustDomain string, log *slog.Logger) (*ca.CA, error) {
	secrets := client.CoreV1().Secrets(namespace)
	plugged, err := secrets.Get(ctx, PluggedInCASecret, metav1.GetOptions{})
	switch {
	case err == nil:
		log.Info("using the plugged-in CA", "secret", namespace+"/"+PluggedInCASecret)
		return fromSecret(plugged, trustDomain)
	case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
		return nil, err
	}
	existing, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return fromSecret(existing, trustDomain)
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	files, err := ca.NewSelfSigned(trustDomain)
	if err != nil {
		return nil, err
	}
	created, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "skiff", "app.kubernetes.io/component": "ca"}},
		Type: corev1.SecretTypeOpaque,
		Data: files,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another replica created it first: use its root, not ours.
		log.Info("another pilot created the CA Secret first; using its root", "secret", namespace+"/"+name)
		existing, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return fromSecret(existing, trustDomain)
	}
	if err != nil {
		return nil, err
	}
	log.Info("created a self-signed root CA", "secret", namespace+"/"+name)
	return fromSecret(created, trustDomain)
}

func fromSecret(s *corev1.Secret, trustDomain string) (*ca.CA, error) {
	authority, err := ca.FromFiles(s.Data, trustDomain)
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return authority, nil
}

// isTransient reports errors worth retrying: the API server is starting, overloaded or not
// reachable yet.
func isTransient(err error) bool {
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) {
		return true
	}
	var status apierrors.APIStatus
	// Anything that is not an API status is a connection problem.
	return !errors.As(err, &status)
}
