package main

import (
	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/bootstrap"
)

func newBootstrapCommand() *cobra.Command {
	var opts bootstrap.Options
	cmd := &cobra.Command{
		Use:   "bootstrap --node ID --xds-address HOST:PORT",
		Short: "Print an Envoy bootstrap (YAML) that joins pilot over ADS",
		Example: `  envoy -c <(pilot bootstrap --node sidecar~127.0.0.2~app-1.default~default.svc.cluster.local \
      --xds-address 127.0.0.1:15010)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := bootstrap.YAML(opts)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.NodeID, "node", "", "node ID, Istio form: sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local (or router~…)")
	f.StringVar(&opts.XDSAddress, "xds-address", "127.0.0.1:15010", "pilot's ADS address, HOST:PORT")
	f.BoolVar(&opts.Delta, "delta", false, "use delta (incremental) xDS instead of state of the world")
	f.StringVar(&opts.Interception, "interception", "none", "none (listeners bind; call them directly) or redirect (traffic captured by iptables)")
	f.StringVar(&opts.AdminAddress, "admin-address", "127.0.0.1:15000", "Envoy admin address")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}
