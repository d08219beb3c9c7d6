package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/translate"
)

func newDescribeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Which Gateways, VirtualServices, DestinationRules, Sidecar, PeerAuthentications and AuthorizationPolicies apply to a workload",
		Long: `describe asks pilot what applies to a proxy in its current configuration, computed by the same
selection translation uses: the Sidecar that scopes it, the Gateways that select it (gateway
proxies) and the VirtualServices bound to them, the PeerAuthentications composed for its
inbound mTLS mode (per served port too), its AuthorizationPolicies in the order Envoy checks
them, and for each service it sees the VirtualService and DestinationRule that apply and the
TLS it originates.`,
		Example: `  skiffctl describe pod productpage-1.bookinfo
  skiffctl describe proxy sidecar~127.0.0.1~productpage-1.bookinfo~bookinfo.svc.cluster.local
  skiffctl describe pod ingressgateway-1.istio-system -o yaml`,
	}
	run := func(cmd *cobra.Command, id string) error {
		if err := g.checkOutput(); err != nil {
			return err
		}
		pilots, closePilots, err := g.pilots(cmd.Context())
		if err != nil {
			return err
		}
		defer closePilots()
		d, err := pilots[0].Describe(cmd.Context(), id)
		if err != nil {
			return err
		}
		if g.output != "table" {
			return printData(cmd.OutOrStdout(), g.output, d)
		}
		printDescription(cmd.OutOrStdout(), d)
		return nil
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "pod POD.NAMESPACE",
		Short:   "What applies to a Pod's (or WorkloadEntry's) sidecar",
		Example: "  skiffctl describe pod productpage-1.bookinfo",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.Contains(args[0], ".") {
				return fmt.Errorf("pod %q: want POD.NAMESPACE", args[0])
			}
			return run(cmd, args[0])
		},
	}, &cobra.Command{
		Use:               "proxy NODE_ID|POD.NAMESPACE",
		Short:             "What applies to a proxy, connected or not (any node ID)",
		Example:           "  skiffctl describe proxy router~127.0.0.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeProxies(g),
		RunE:              func(cmd *cobra.Command, args []string) error { return run(cmd, args[0]) },
	})
	return cmd
}

func printDescription(w io.Writer, d *translate.Description) {
	fmt.Fprintf(w, "Proxy:     %s (%s)\n", d.Proxy, d.Type)
	if d.Workload != "" {
		fmt.Fprintf(w, "Workload:  %s", d.Workload)
		if d.ServiceAccount != "" {
			fmt.Fprintf(w, " (service account %s)", d.ServiceAccount)
		}
		fmt.Fprintln(w)
	}
	if len(d.Labels) > 0 {
		var ls []string
		for k, v := range d.Labels {
			ls = append(ls, k+"="+v)
		}
		fmt.Fprintf(w, "Labels:    %s\n", strings.Join(slices.Sorted(slices.Values(ls)), ","))
	}
	if d.Sidecar != nil {
		fmt.Fprintf(w, "Sidecar:   %s\n", d.Sidecar)
	}
	for _, gw := range d.Gateways {
		fmt.Fprintf(w, "Gateway:   %s\n", gw)
	}
	for _, vs := range d.GatewayVirtualServices {
		fmt.Fprintf(w, "Gateway VirtualService: %s\n", vs)
	}
	for i := 0; i < len(d.ExposedBy); i++ {
		if d.ExposedBy[i].Kind != "VirtualService" {
			continue
		}
		var gateways []string
		for j := i + 1; j < len(d.ExposedBy) && d.ExposedBy[j].Kind == "Gateway"; j++ {
			gateways = append(gateways, d.ExposedBy[j].Namespace+"/"+d.ExposedBy[j].Name)
		}
		fmt.Fprintf(w, "Exposed on Gateway %s by %s\n", strings.Join(gateways, ","), d.ExposedBy[i])
	}
	fmt.Fprintf(w, "\nInbound mTLS: %s", d.Inbound.MTLS)
	if len(d.PeerAuthentications) == 0 {
		fmt.Fprint(w, " (no PeerAuthentication applies)")
	}
	fmt.Fprintln(w)
	for _, pa := range d.PeerAuthentications {
		fmt.Fprintf(w, "  %s\n", pa)
	}
	for _, p := range d.Inbound.Ports {
		fmt.Fprintf(w, "  port %d of %s (target %d): %s\n", p.Port, p.Service, p.TargetPort, p.MTLS)
	}
	if len(d.AuthorizationPolicies) > 0 {
		fmt.Fprintln(w, "\nAuthorizationPolicies (in the order Envoy checks them):")
		for _, ap := range d.AuthorizationPolicies {
			fmt.Fprintf(w, "  %s %s\n", ap.Action, ap.ObjectRef)
		}
	}
	if len(d.Outbound) > 0 {
		fmt.Fprintln(w, "\nOutbound:")
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  HOST\tVIRTUAL SERVICE\tDESTINATION RULE\tMTLS")
		for _, o := range d.Outbound {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Host, refOrDash(o.VirtualService), refOrDash(o.DestinationRule), o.MTLS)
		}
		_ = tw.Flush()
	}
}

func refOrDash(r *translate.ObjectRef) string {
	if r == nil {
		return "-"
	}
	return r.Namespace + "/" + r.Name
}
