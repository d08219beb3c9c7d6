// Command pilot is Skiff's control plane: it reads Istio configuration (from a folder for now),
// translates it into Envoy configuration and serves it over ADS. `pilot bootstrap` prints the
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

	"github.com/skiffmesh/skiff/pkg/ca"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pilot:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	opts := serveOptions{}
	var logLevel string
	cmd := &cobra.Command{
		Use:   "pilot",
		Short: "Skiff's xDS control plane: Istio configuration in, Envoy configuration out over ADS",
		Long: `pilot reads Istio configuration (ServiceEntry, WorkloadEntry, VirtualService,
DestinationRule, Gateway, Sidecar, PeerAuthentication, AuthorizationPolicy) from a folder,
translates it into Envoy listeners, routes, clusters and endpoints, and serves them over gRPC ADS.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			return serve(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.configDir, "config-dir", "", "folder of Istio YAML to serve (read recursively, watched for changes)")
	f.StringVar(&opts.xdsAddress, "xds-address", ":15010", "plaintext gRPC address for ADS, health and reflection")
	f.StringVar(&opts.monitoringAddress, "monitoring-address", ":15014", "HTTP address for /metrics, /ready and /debug/")
	f.BoolVar(&opts.reflection, "reflection", true, "serve gRPC reflection on the plaintext xDS port (for grpcurl)")
	f.StringVar(&opts.xdsTLSAddress, "xds-tls-address", ":15012", "TLS gRPC address for the same ADS, with a certificate from the CA for istiod.istio-system.svc, localhost and 127.0.0.1 (empty: off)")
	f.StringVar(&opts.caDir, "ca-dir", ".skiff-ca", "CA directory in Istio's cacerts layout; a self-signed root is created and persisted there when it holds none (the one secret on disk)")
	f.StringVar(&opts.trustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain of workload identities")
	f.DurationVar(&opts.workloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadTTL, "lifetime of workload certificates (SDS default); they are re-issued and pushed at half-life")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("config-dir")
	cmd.AddCommand(newBootstrapCommand(), newCACommand())
	return cmd
}
