package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/bootstrap"
)

// drainFlags are bootstrap.DrainArgs as typed on a command line, and drainSeconds the drain
// time they set.
var (
	drainFlags   = strings.Join(bootstrap.DrainArgs(), " ")
	drainSeconds = strconv.Itoa(int(bootstrap.DrainTime / time.Second))
)

func newBootstrapCommand() *cobra.Command {
	var opts bootstrap.Options
	var output, rootFile string
	cmd := &cobra.Command{
		Use:   "bootstrap --node ID --xds-address HOST:PORT",
		Short: "Print an Envoy bootstrap that joins pilot over ADS",
		Long: `Print an Envoy bootstrap that joins pilot over ADS.

The default output is JSON, which is also YAML: Envoy parses a config path without a .yaml
extension as JSON, so this is the form that works with envoy -c <(pilot bootstrap ...).
Use --output yaml for block-style YAML to save as a .yaml file.

When the node ID's IP is a loopback address other than 127.0.0.1 (127.0.0.2, 127.0.0.3, ...:
several "pods" on one machine), Envoy's upstream connections, the one to pilot included, leave
from that IP (cluster_manager.upstream_bind_config), because pilot grants a proxy its workload
certificate only when it connects from its WorkloadEntry's address. Such a proxy then reaches
only loopback destinations. --upstream-bind IP binds to another address, --upstream-bind ''
binds nothing.

Start Envoy with ` + drainFlags + `, as the sidecar injector
and Istio's agent do: when a configuration change replaces or removes a filter chain (a
PeerAuthentication turned STRICT removes the plaintext one), Envoy then tells the chain's
connections to close at once, and closes any still open after ` + drainSeconds + ` s at the latest
rather than its default 600 s. Only Envoy's command line sets this, not a bootstrap.
AuthorizationPolicy changes reach the next HTTP request on a connection already open, and
the next TCP connection, at once; a TCP connection opened before a change to its rules is
closed by the end of the drain.`,
		Example: `  envoy --disable-hot-restart ` + drainFlags + ` \
      -c <(pilot bootstrap --node sidecar~127.0.0.2~app-1.default~default.svc.cluster.local \
      --xds-address 127.0.0.1:15010 --admin-address 127.0.0.2:15000)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rootFile != "" {
				root, err := os.ReadFile(rootFile)
				if err != nil {
					return fmt.Errorf("--xds-root-cert: %w", err)
				}
				opts.XDSRootCert = root
			}
			render := bootstrap.JSON
			switch output {
			case "json":
			case "yaml":
				render = bootstrap.YAML
			default:
				return fmt.Errorf("--output %q: want json or yaml", output)
			}
			out, err := render(opts)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.NodeID, "node", "", "node ID, Istio form: sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local (or router~…)")
	f.StringVar(&opts.XDSAddress, "xds-address", "127.0.0.1:15010", "pilot's ADS address, HOST:PORT; several replicas comma-separated (all IPs or all DNS names): Envoy connects to one and moves to another when it goes")
	f.BoolVar(&opts.Delta, "delta", false, "use delta (incremental) xDS instead of state of the world")
	f.StringVar(&opts.Interception, "interception", "none", "none (listeners bind; call them directly) or redirect (traffic captured by iptables)")
	f.StringVar(&opts.AdminAddress, "admin-address", "127.0.0.1:15000", "Envoy admin address")
	f.StringToStringVar(&opts.Labels, "labels", nil, "workload labels, k=v,k2=v2, for a proxy whose node ID names no WorkloadEntry (a named one's labels win); they select Gateways, Sidecars and policies, never an identity")
	f.StringVar(&rootFile, "xds-root-cert", "", "PEM FILE with the root to verify pilot with (from pilot ca root): connect over TLS, to pilot's --xds-tls-address")
	f.StringVar(&opts.XDSRootCertFile, "xds-root-cert-file", "", "absolute PATH of a PEM root that Envoy reads itself at start (e.g. a mounted istio-ca-root-cert ConfigMap): connect over TLS; instead of --xds-root-cert")
	f.StringVar(&opts.ReadinessAddress, "readiness-address", "", "IP:PORT of a listener answering GET /ready and /healthz/ready from Envoy's admin, for a readiness probe (Istio's "+bootstrap.DefaultReadinessAddress+"; empty: none)")
	f.StringVar(&opts.PrometheusAddress, "prometheus-address", "", "IP:PORT of a listener serving /stats/prometheus from Envoy's admin (Istio's "+bootstrap.DefaultPrometheusAddress+"; empty: none)")
	f.StringVar(&opts.XDSServerName, "xds-server-name", "", "SNI and required certificate name with --xds-root-cert(-file) (default: the --xds-address host if a DNS name, else "+bootstrap.DefaultXDSServerName+")")
	f.StringVar(&opts.UpstreamBind, "upstream-bind", bootstrap.UpstreamBindAuto, "source IP of Envoy's upstream connections, pilot's included: "+bootstrap.UpstreamBindAuto+" (the node ID's IP if in 127.0.0.0/8 but not 127.0.0.1), an IP, or '' for none")
	f.StringVarP(&output, "output", "o", "json", "json (works with envoy -c <(...)) or yaml")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}
