package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/skiffctl"
)

func newProxyStatusCommand(g *globals) *cobra.Command {
	var envoy string
	cmd := &cobra.Command{
		Use:     "proxy-status [PROXY]",
		Aliases: []string{"ps"},
		Short:   "Per proxy and xDS type: SYNCED, NOT SENT, STALE (sent, not ACKed yet) or NACKED",
		Long: `proxy-status lists every proxy connected to pilot with the state of each xDS type:
SYNCED (pilot's latest response is ACKed), NOT SENT (nothing sent: the proxy asked for nothing
pilot has, or pilot refused it, as SDS to a proxy that failed the identity check), STALE (sent,
not ACKed yet) or NACKED (Envoy rejected it, or resources of it that pilot now holds back). The
CONFIG column is the configuration key: proxies showing the same one share one translation.

With a PROXY (node ID or POD.NAMESPACE), it shows what differs between what pilot sent and what
the proxy ACKed, type by type, with the NACK's error and the rejected resources; with --envoy it
also compares pilot's configuration with the Envoy's, resource by resource.`,
		Example: `  skiffctl proxy-status
  skiffctl proxy-status productpage-1.bookinfo
  skiffctl proxy-status productpage-1.bookinfo --envoy localhost:15000
  skiffctl proxy-status -o json`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeProxies(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			ctx := cmd.Context()
			pilots, closePilots, err := g.pilots(ctx)
			if err != nil {
				return err
			}
			defer closePilots()
			var statuses []skiffctl.ProxyStatus
			for _, p := range pilots {
				s, err := p.Syncz(ctx)
				if err != nil {
					return err
				}
				statuses = append(statuses, s...)
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				if g.output != "table" {
					return printData(out, g.output, statuses)
				}
				return skiffctl.PrintStatusTable(out, skiffctl.Rows(statuses))
			}
			status := findProxy(statuses, args[0])
			if status == nil {
				return fmt.Errorf("proxy %q is not connected to pilot (%d proxies are; `skiffctl proxy-status` lists them)", args[0], len(statuses))
			}
			if g.output != "table" {
				return printData(out, g.output, status)
			}
			skiffctl.PrintStatusDetail(out, status)
			if envoy == "" {
				return nil
			}
			return compareWithEnvoy(cmd, g, pilotOf(pilots, status.Pilot), status.Proxy, envoy, out)
		},
	}
	cmd.Flags().StringVar(&envoy, "envoy", "", "also compare with what this Envoy holds: its admin host:port, or POD.NAMESPACE in Kubernetes mode")
	return cmd
}

// findProxy finds a proxy by node ID or by its POD.NAMESPACE part.
func findProxy(statuses []skiffctl.ProxyStatus, id string) *skiffctl.ProxyStatus {
	for i := range statuses {
		s := &statuses[i]
		if s.Proxy == id {
			return s
		}
		if parts := strings.Split(s.Proxy, "~"); len(parts) == 4 && parts[2] == id {
			return s
		}
	}
	return nil
}

func pilotOf(pilots []*skiffctl.Pilot, instance string) *skiffctl.Pilot {
	for _, p := range pilots {
		if p.Instance == instance {
			return p
		}
	}
	return pilots[0]
}

// compareWithEnvoy prints, type by type, whether the Envoy holds what pilot serves, as
// istioctl proxy-status PROXY does, with the differences.
func compareWithEnvoy(cmd *cobra.Command, g *globals, pilot *skiffctl.Pilot, proxy, envoy string, out io.Writer) error {
	ctx := cmd.Context()
	fromPilot, err := pilot.ConfigDump(ctx, proxy)
	if err != nil {
		return err
	}
	admin, closeAdmin, err := g.envoyAdmin(ctx, envoy)
	if err != nil {
		return err
	}
	defer closeAdmin()
	fromEnvoy, err := skiffctl.EnvoyConfigDump(ctx, admin)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nPilot's configuration compared with Envoy %s's:\n", envoy)
	for _, typ := range skiffctl.DiffTypes {
		var diff strings.Builder
		n, err := skiffctl.DiffDumps(&diff, typ, fromPilot, fromEnvoy, &skiffctl.Filter{})
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintf(out, "%s match\n", typ)
			continue
		}
		fmt.Fprintf(out, "%s: %d differ\n%s", typ, n, diff.String())
	}
	return nil
}

// completeProxies completes a PROXY argument with the connected proxies' POD.NAMESPACE, as
// pilot's /debug/syncz lists them.
func completeProxies(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		pilots, closePilots, err := g.pilots(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		defer closePilots()
		var out []cobra.Completion
		for _, p := range pilots {
			statuses, err := p.Syncz(cmd.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			for _, s := range statuses {
				if parts := strings.Split(s.Proxy, "~"); len(parts) == 4 {
					out = append(out, parts[2])
				}
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
