// Command sidecar-injector is Skiff's sidecar injector: a mutating admission webhook that adds
// an Envoy sidecar (istio-proxy) and its traffic capture (istio-init) to the pods Skiff is
// selected for by Istio's labels (istio.io/rev=REVISION, or istio-injection=enabled when
// installed as the default revision). The logic is package inject; this command serves it over
// HTTPS on /inject, with /ready for its readiness probe. It also serves istiod's validation
// webhook, /validate (validate.go): Istio configuration that pilot would refuse is refused by
// the API server, with pilot's own validation, and the ValidatingWebhookConfigurations move
// from failurePolicy Ignore to Fail once the webhook is seen to work (validation_config.go).
//
// TLS comes from files (--tls-cert/--tls-key, e.g. a cert-manager Certificate's Secret mounted
// into the pod; re-read when they change), or, without them, is self-managed: a CA and a
// serving certificate created in memory at start, the CA written into the caBundle of every
// webhook of the MutatingWebhookConfiguration --webhook-config, and kept there. Self-managed
// TLS suits one replica: each replica would make its own CA and overwrite the others'.
//
// Kubernetes access (in-cluster, or --kubeconfig): get/list/watch namespaces (their labels
// select pods), get/update the validatingwebhookconfigurations --validation-webhook-configs,
// create (dry run only) Gateways in --namespace, and with self-managed TLS get/update
// mutatingwebhookconfigurations.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffmesh/skiff/pkg/inject"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sidecar-injector:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	listen        string
	config        inject.Config
	kubeconfig    string
	tlsCert       string
	tlsKey        string
	dnsNames      []string
	webhookConfig string
	// validationConfigs are the ValidatingWebhookConfigurations of /validate.
	validationConfigs []string
	namespace         string
	logLevel          string
}

func newRootCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "sidecar-injector",
		Short: "Skiff's sidecar injector: a mutating admission webhook adding Envoy to selected pods",
		Long: `sidecar-injector serves a mutating admission webhook (POST /inject, AdmissionReview v1)
that adds Skiff's sidecar to pods selected by Istio's labels: istio.io/rev=REVISION on the pod or
its namespace, or, with --default-revision, istio-injection=enabled and sidecar.istio.io/inject=true.
The sidecar is Envoy with a static bootstrap that joins pilot over TLS, and an init container
that redirects the pod's traffic to it.

It also serves istiod's validation webhook (POST /validate): Istio configuration that pilot
would refuse is refused by the API server with pilot's own error. The ValidatingWebhookConfigurations
named by --validation-webhook-configs are installed with failurePolicy Ignore and switched to
Fail once a dry-run create of an invalid Gateway is refused, as istiod does.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", ":9443", "HTTPS address of the webhooks (/inject, /validate) and of /ready")
	f.StringVar(&o.config.Revision, "revision", inject.DefaultSkiffRevision, "Skiff's revision: the istio.io/rev value that selects it")
	f.BoolVar(&o.config.DefaultRevision, "default-revision", false, "Skiff is the default revision: also inject for istio-injection=enabled, istio.io/rev=default and sidecar.istio.io/inject=true (never beside a default istiod)")
	f.StringVar(&o.config.PilotAddress, "pilot-address", inject.DefaultPilotAddress, "pilot's TLS xDS address, HOST:PORT, as pods reach it")
	f.StringVar(&o.config.PilotServerName, "pilot-server-name", inject.DefaultPilotServerName, "the name in pilot's serving certificate, verified by the sidecars")
	f.StringVar(&o.config.ProxyImage, "proxy-image", inject.DefaultProxyImage, "image of the istio-proxy container (Envoy)")
	f.StringVar(&o.config.CaptureImage, "capture-image", inject.DefaultCaptureImage, "image of the istio-init container (skiff-capture)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: the in-cluster service account)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate chain FILE for the webhook (with --tls-key; re-read when it changes); unset: self-managed TLS")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key FILE for --tls-cert")
	f.StringSliceVar(&o.dnsNames, "dns-names", []string{"skiff-sidecar-injector.istio-system.svc"}, "DNS names of the self-managed serving certificate (the webhook Service's name)")
	f.StringVar(&o.webhookConfig, "webhook-config", "skiff-sidecar-injector", "MutatingWebhookConfiguration whose caBundle self-managed TLS keeps up to date")
	f.StringSliceVar(&o.validationConfigs, "validation-webhook-configs", []string{"istio-validator-skiff-istio-system"}, "ValidatingWebhookConfigurations of the validation webhook (/validate), switched from failurePolicy Ignore to Fail once the webhook works, and whose caBundle self-managed TLS keeps; missing ones are skipped")
	f.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "istio-system"), "the injector's namespace, where the validation webhook's readiness check dry-runs an invalid Gateway")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// run serves the webhook until ctx ends.
func run(ctx context.Context, o options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both, or neither for self-managed TLS")
	}
	// Fail at start, not on the first pod, if the bootstrap options are wrong.
	if _, err := o.config.Inject(probePod(), "default"); err != nil {
		return fmt.Errorf("checking the sidecar configuration: %w", err)
	}

	restCfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	istio, err := istioclient.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating the Istio client: %w", err)
	}
	validation := &validationConfigs{client: client, istio: istio, names: o.validationConfigs,
		namespace: o.namespace, revision: o.config.WithDefaults().Revision, log: log.With("controller", "validation")}

	var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if o.tlsCert != "" {
		fc, err := newFileCert(o.tlsCert, o.tlsKey)
		if err != nil {
			return err
		}
		getCert = fc.get
		log.Info("serving with the certificate from files", "cert", o.tlsCert)
	} else {
		sc, err := newSelfSigned(o.dnsNames)
		if err != nil {
			return err
		}
		getCert = sc.get
		log.Info("serving with a self-managed certificate", "dnsNames", o.dnsNames, "webhookConfig", o.webhookConfig)
		go keepCABundle(ctx, client, o.webhookConfig, sc.caPEM, log)
		validation.caPEM = sc.caPEM
	}

	namespaces := newNamespaceLabels(client)
	namespaces.start(ctx)

	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	cfg := o.config.WithDefaults()
	h := &inject.Handler{Config: cfg, Namespaces: namespaces.lookup, Log: log}
	log.Info("sidecar injector listening", "address", lis.Addr().String(), "revision", cfg.Revision,
		"defaultRevision", cfg.DefaultRevision, "pilot", cfg.PilotAddress, "pilotServerName", cfg.PilotServerName,
		"proxyImage", cfg.ProxyImage, "captureImage", cfg.CaptureImage)
	mux := inject.NewMux(h, namespaces.ready)
	vh := &validationHandler{log: log.With("webhook", "validation")}
	mux.Handle(ValidatePath, vh)
	mux.Handle(ValidatePath+"/", vh) // istiod answers both
	// The listener is open, so the API server's calls of the readiness check queue until
	// Serve accepts them.
	go validation.run(ctx)
	return inject.Serve(ctx, lis, mux, getCert, log)
}

// envOr is the environment variable name, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// restConfig is the kubeconfig file's configuration, else the in-cluster one.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes configuration (outside a cluster, pass --kubeconfig): %w", err)
	}
	return cfg, nil
}
