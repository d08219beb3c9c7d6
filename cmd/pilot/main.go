// Command pilot is Skiff's control plane: it reads Istio configuration (from a folder, or from
// a Kubernetes cluster's API server), translates it into Envoy configuration and serves it over
// ADS. `pilot bootstrap` prints the
// bootstrap with which an upstream Envoy joins it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/xds"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pilot:", err)
		os.Exit(1)
	}
}

// envOr is the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newRootCommand() *cobra.Command {
	opts := serveOptions{}
	var logLevel string
	cmd := &cobra.Command{
		Use:   "pilot",
		Short: "Skiff's xDS control plane: Istio configuration in, Envoy configuration out over ADS",
		Long: `pilot reads Istio configuration (ServiceEntry, WorkloadEntry, VirtualService,
DestinationRule, Gateway, Sidecar, PeerAuthentication, AuthorizationPolicy) and the service
registry (Kubernetes Services, EndpointSlices, Pods) from a folder (--config-dir) or from a
Kubernetes API server (--kubernetes, with --kubeconfig or in-cluster), translates it into Envoy
listeners, routes, clusters and endpoints, and serves them over gRPC ADS.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			// client-go logs through klog: send it to the same place, in the same format.
			klog.SetSlogLogger(opts.logger)
			opts.kubernetes = opts.kubernetes || opts.kubeconfig != ""
			if opts.kubernetes == (opts.configDir != "") {
				return fmt.Errorf("pass exactly one of --config-dir (a folder) and --kubernetes/--kubeconfig (a cluster)")
			}
			return serve(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.configDir, "config-dir", "", "folder of Istio and Kubernetes YAML to serve (read recursively, watched for changes)")
	f.BoolVar(&opts.kubernetes, "kubernetes", false, "watch a Kubernetes API server instead of a folder (in-cluster configuration unless --kubeconfig)")
	f.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster to watch (implies --kubernetes)")
	f.StringVar(&opts.namespace, "namespace", envOr("POD_NAMESPACE", "istio-system"), "the control plane's namespace, where the CA Secret lives (Kubernetes mode)")
	f.StringVar(&opts.caSecret, "ca-secret", "skiff-ca", "Secret holding the CA in Istio's cacerts layout, created with a self-signed root when absent; Secret cacerts, when present, wins (Kubernetes mode)")
	f.StringVar(&opts.xdsAddress, "xds-address", ":15010", "plaintext gRPC address for ADS, health and reflection")
	f.StringVar(&opts.monitoringAddress, "monitoring-address", ":15014", "HTTP address for /metrics, /ready and /debug/")
	f.BoolVar(&opts.reflection, "reflection", true, "serve gRPC reflection on the plaintext xDS port (for grpcurl)")
	f.BoolVar(&opts.istioMetrics, "istio-metrics", true, "Istio's standard metrics on by default (the mesh configuration's defaultProviders.metrics [prometheus]): sidecars stream access logs to pilot, which serves istio_requests_total, ... on /metrics")
	f.StringVar(&opts.meshConfig, "mesh-config", "", "Istio MeshConfig YAML (extensionProviders, defaultProviders, accessLogFile, ...), watched (keep it outside --config-dir); in Kubernetes mode the ConfigMap istio (key mesh) in --namespace replaces it while it exists")
	f.StringVar(&opts.xdsTLSAddress, "xds-tls-address", ":15012", "TLS gRPC address for the same ADS, with a certificate from the CA for istiod.istio-system.svc, localhost and 127.0.0.1 (empty: off)")
	f.StringVar(&opts.caDir, "ca-dir", ".skiff-ca", "CA directory in Istio's cacerts layout; a self-signed root is created and persisted there when it holds none (folder mode; the one secret on disk)")
	f.StringVar(&opts.trustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain of workload identities")
	f.DurationVar(&opts.workloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadTTL, "lifetime of workload certificates (SDS default); they are re-issued and pushed at half-life")
	f.DurationVar(&opts.sendTimeout, "xds-send-timeout", xds.DefaultSendTimeout, "close an ADS stream whose response could not be written for this long: the proxy is not reading (0: never)")
	f.IntVar(&opts.maxStreams, "xds-max-streams", xds.DefaultMaxStreams, "ADS streams served at once; more are refused with RESOURCE_EXHAUSTED")
	f.StringVar(&opts.xdsLog, "xds-log", "", "write the protocol log of the proxies whose node ID or POD.NAMESPACE matches this glob (e.g. 'productpage-*.default') at debug level: every xDS request and response, ACK/NACK (as /debug/xds_log serves it)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newBootstrapCommand(), newCACommand())
	return cmd
}
