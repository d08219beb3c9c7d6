package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/skiffmesh/skiff/pkg/inject"
)

// validationConfigs does for the ValidatingWebhookConfigurations of the validation webhook
// what istiod's validation controller (pkg/webhooks/validation/controller) does for its own:
// the manifests install them with failurePolicy Ignore, so that Istio configuration can be
// written before the webhook serves (a webhook that fails closed and is not there yet would
// refuse everything); this loop writes the self-managed CA into their caBundle, then, once a
// dry-run create of an invalid Gateway is refused by the webhook, proving the API server
// reaches it, sets failurePolicy Fail, from then on also after a re-apply of the manifests
// resets it.
type validationConfigs struct {
	client kubernetes.Interface
	istio  istioclient.Interface
	names  []string
	// caPEM is written into the caBundles; nil when the CA is not the injector's to write
	// (cert-manager's CA injector writes it).
	caPEM []byte
	// namespace and revision place the dry-run Gateway: in the injector's namespace, labelled
	// istio.io/rev=REVISION so that the revision's webhook (whose objectSelector asks for
	// the label) is the one called.
	namespace, revision string
	log                 *slog.Logger

	// refusedOnce is set when the webhook has been seen refusing the invalid Gateway.
	refusedOnce bool
}

// dryRunGatewayName is the invalid Gateway of the readiness check; it is never stored.
const dryRunGatewayName = "skiff-invalid-gateway"

// run keeps the configurations until ctx ends: at once, again with backoff while something
// is not done (the API server unreachable, the webhook not refusing yet), and every
// caBundleRecheck when all is done.
func (c *validationConfigs) run(ctx context.Context) {
	delay := time.Second
	for {
		wait := caBundleRecheck
		if err := c.sync(ctx); err != nil {
			c.log.Warn("validation webhook configuration not done yet; retrying", "retryIn", delay, "error", err)
			wait, delay = delay, min(2*delay, caBundleRecheck)
		} else {
			delay = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// sync brings every configuration up to date once. The error says what is not done yet.
func (c *validationConfigs) sync(ctx context.Context) error {
	var problems []string
	for _, name := range c.names {
		if err := c.syncOne(ctx, name); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func (c *validationConfigs) syncOne(ctx context.Context, name string) error {
	api := c.client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	var notReady string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		notReady = ""
		vwc, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Not installed (deploy/ without the default revision, say): nothing to keep.
			c.log.Debug("no such ValidatingWebhookConfiguration", "name", name)
			return nil
		}
		if err != nil {
			return err
		}
		needCA := c.caPEM != nil && !allCABundles(vwc, c.caPEM)
		needFail := !allFailClosed(vwc)
		if !needCA && !needFail {
			return nil
		}
		failClosed := false
		if needFail {
			// The dry run goes through the caBundle the configuration has now: a first pass
			// writes the CA, a later one (once the API server has read it) switches.
			if c.refusedOnce || !needCA {
				if refused, why := c.dryRunRefused(ctx); refused {
					failClosed = true
				} else {
					notReady = why
				}
			} else {
				notReady = "caBundle written just now; checking the webhook next"
			}
		}
		updated := vwc.DeepCopy()
		for i := range updated.Webhooks {
			if c.caPEM != nil {
				updated.Webhooks[i].ClientConfig.CABundle = c.caPEM
			}
			if failClosed {
				fail := admissionregv1.Fail
				updated.Webhooks[i].FailurePolicy = &fail
			}
		}
		if !needCA && !failClosed {
			return nil
		}
		if _, err := api.Update(ctx, updated, metav1.UpdateOptions{FieldManager: "skiff-sidecar-injector"}); err != nil {
			return err
		}
		c.log.Info("updated the validation webhook configuration", "name", name, "caBundle", needCA, "failurePolicy", policyName(failClosed))
		return nil
	})
	if err != nil {
		return fmt.Errorf("ValidatingWebhookConfiguration %q: %w", name, err)
	}
	if notReady != "" {
		return fmt.Errorf("ValidatingWebhookConfiguration %q stays failurePolicy Ignore: %s", name, notReady)
	}
	return nil
}

func policyName(failClosed bool) string {
	if failClosed {
		return string(admissionregv1.Fail)
	}
	return "unchanged"
}

func allCABundles(vwc *admissionregv1.ValidatingWebhookConfiguration, caPEM []byte) bool {
	for _, wh := range vwc.Webhooks {
		if !bytes.Equal(wh.ClientConfig.CABundle, caPEM) {
			return false
		}
	}
	return true
}

func allFailClosed(vwc *admissionregv1.ValidatingWebhookConfiguration) bool {
	for _, wh := range vwc.Webhooks {
		if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregv1.Fail {
			return false
		}
	}
	return true
}

// dryRunRefused asks the API server to create (dry run: nothing is stored) a Gateway without
// servers, which pilot's validation refuses, and reports whether the webhook refused it, or
// else why it is not known to work, istiod's readiness test for failing closed.
func (c *validationConfigs) dryRunRefused(ctx context.Context) (bool, string) {
	gw := &networkingv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: dryRunGatewayName, Namespace: c.namespace,
			Labels: map[string]string{inject.RevisionLabel: c.revision}},
		Spec: networking.Gateway{},
	}
	_, err := c.istio.NetworkingV1().Gateways(c.namespace).Create(ctx, gw, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil:
		return false, "a dry-run create of an invalid Gateway was not refused: the API server does not reach the webhook yet"
	case strings.Contains(err.Error(), "denied the request"):
		if !c.refusedOnce {
			c.log.Info("the API server refuses invalid configuration through the webhook: switching to failurePolicy Fail")
		}
		c.refusedOnce = true
		return true, ""
	case apierrors.IsNotFound(err):
		// No Gateway CRD: the check cannot be made, and there is nothing to validate either.
		c.log.Warn("no Gateway CRD: cannot check the validation webhook; assuming it works")
		c.refusedOnce = true
		return true, ""
	default:
		return false, fmt.Sprintf("the dry run of an invalid Gateway failed otherwise: %v", err)
	}
}
