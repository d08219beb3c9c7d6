package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/skiffctl"
)

// proxyConfigOptions are proxy-config's flags.
type proxyConfigOptions struct {
	filter skiffctl.Filter
	envoy  string
	diff   bool
}

func newProxyConfigCommand(g *globals) *cobra.Command {
	opts := &proxyConfigOptions{}
	cmd := &cobra.Command{
		Use:     "proxy-config",
		Aliases: []string{"pc"},
		Short:   "A proxy's clusters, listeners, routes, endpoints, secrets or bootstrap, as istioctl shows them",
		Long: `proxy-config shows one kind of a proxy's configuration as istioctl proxy-config's tables, or in
full with -o json|yaml. By default it shows what pilot serves the proxy (/debug/config_dump: a
connected proxy's node ID or POD.NAMESPACE, or any node ID, translated on the spot); with
--envoy, what the Envoy holds (its admin /config_dump: host:port, or POD.NAMESPACE in
Kubernetes mode through a port-forward to 15000). With --diff and --envoy it prints a unified
diff of the two, resource by resource (empty when the Envoy holds exactly what pilot serves;
exit code 1 when they differ). Secrets show names, serials and validity, never key bytes.`,
		Example: `  skiffctl proxy-config clusters productpage-1.bookinfo
  skiffctl proxy-config clusters productpage-1.bookinfo --fqdn reviews.bookinfo.svc.cluster.local --subset v1
  skiffctl proxy-config listeners productpage-1.bookinfo --port 9080
  skiffctl proxy-config routes productpage-1.bookinfo --name 9080 -o yaml
  skiffctl proxy-config endpoints productpage-1.bookinfo --envoy localhost:15000
  skiffctl proxy-config all productpage-1.bookinfo --envoy localhost:15000 --diff`,
	}
	kinds := []struct{ use, typ, short string }{
		{"clusters", skiffctl.Clusters, "outbound and inbound clusters (--fqdn, --port, --subset, --direction)"},
		{"listeners", skiffctl.Listeners, "listeners, a row per filter chain (--address, --port, --type)"},
		{"routes", skiffctl.Routes, "route configurations, a row per route (--name)"},
		{"endpoints", skiffctl.Endpoints, "endpoints of the proxy's EDS clusters (--cluster, --address, --port, --status)"},
		{"secrets", skiffctl.Secrets, "SDS secrets: names, serials, validity (no key material)"},
		{"extensions", skiffctl.Extensions, "extension configurations (ECDS: the RBAC filters' rules)"},
		{"bootstrap", skiffctl.Bootstrap, "Envoy's bootstrap (needs --envoy: pilot does not hold it)"},
		{"all", "all", "every kind above"},
	}
	for _, k := range kinds {
		sub := &cobra.Command{
			Use:               k.use + " PROXY",
			Short:             k.short,
			Example:           fmt.Sprintf("  skiffctl proxy-config %s productpage-1.bookinfo\n  skiffctl proxy-config %s productpage-1.bookinfo --envoy localhost:15000 -o yaml", k.use, k.use),
			Args:              cobra.ExactArgs(1),
			ValidArgsFunction: completeProxies(g),
			RunE: func(cmd *cobra.Command, args []string) error {
				return runProxyConfig(cmd, g, opts, k.typ, args[0])
			},
		}
		f := sub.Flags()
		switch k.typ {
		case skiffctl.Clusters, "all":
			f.StringVar(&opts.filter.FQDN, "fqdn", "", "clusters of this service FQDN (substring of the cluster name)")
			f.StringVar(&opts.filter.Subset, "subset", "", "clusters of this subset")
			f.StringVar(&opts.filter.Direction, "direction", "", "inbound or outbound clusters")
		}
		switch k.typ {
		case skiffctl.Clusters, skiffctl.Listeners, skiffctl.Endpoints, "all":
			f.IntVar(&opts.filter.Port, "port", 0, "this port only")
		}
		switch k.typ {
		case skiffctl.Listeners, skiffctl.Endpoints, "all":
			f.StringVar(&opts.filter.Address, "address", "", "this address only")
		}
		switch k.typ {
		case skiffctl.Listeners:
			f.StringVar(&opts.filter.Type, "type", "", "listeners of this type: HTTP, TCP, HTTP+TCP or UNKNOWN")
		case skiffctl.Endpoints:
			f.StringVar(&opts.filter.Cluster, "cluster", "", "endpoints of this cluster")
			f.StringVar(&opts.filter.Status, "status", "", "endpoints of this health status (HEALTHY, UNHEALTHY, ...)")
		}
		switch k.typ {
		case skiffctl.Routes, skiffctl.Clusters, skiffctl.Listeners, skiffctl.Secrets, skiffctl.Extensions:
			f.StringVar(&opts.filter.Name, "name", "", "the resource of this name only")
		}
		cmd.AddCommand(sub)
	}
	cmd.PersistentFlags().StringVar(&opts.envoy, "envoy", "", "read the Envoy instead of pilot: its admin host:port, or POD.NAMESPACE in Kubernetes mode")
	cmd.PersistentFlags().BoolVar(&opts.diff, "diff", false, "with --envoy: unified diff of pilot's resources and the Envoy's; exit code 1 when they differ")
	return cmd
}

func runProxyConfig(cmd *cobra.Command, g *globals, opts *proxyConfigOptions, typ, proxy string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	if opts.diff && opts.envoy == "" {
		return fmt.Errorf("--diff compares pilot with an Envoy: name it with --envoy")
	}
	var fromPilot, fromEnvoy *skiffctl.Dump
	if opts.envoy == "" || opts.diff {
		if typ == skiffctl.Bootstrap && !opts.diff {
			return fmt.Errorf("pilot does not hold Envoy's bootstrap (`pilot bootstrap` writes it): read it from the Envoy with --envoy")
		}
		pilots, closePilots, err := g.pilots(ctx)
		if err != nil {
			return err
		}
		defer closePilots()
		if fromPilot, err = pilotDump(cmd, pilots, proxy); err != nil {
			return err
		}
	}
	if opts.envoy != "" {
		admin, closeAdmin, err := g.envoyAdmin(ctx, opts.envoy)
		if err != nil {
			return err
		}
		defer closeAdmin()
		if fromEnvoy, err = skiffctl.EnvoyConfigDump(ctx, admin); err != nil {
			return err
		}
	}
	types := []string{typ}
	if typ == "all" {
		types = []string{skiffctl.Clusters, skiffctl.Listeners, skiffctl.Routes, skiffctl.Endpoints, skiffctl.Secrets, skiffctl.Extensions}
		if fromPilot == nil {
			types = append([]string{skiffctl.Bootstrap}, types...)
		}
	}
	if opts.diff {
		differ := 0
		for _, t := range types {
			if t == skiffctl.Bootstrap {
				continue
			}
			n, err := skiffctl.DiffDumps(out, t, fromPilot, fromEnvoy, &opts.filter)
			if err != nil {
				return err
			}
			differ += n
		}
		if differ > 0 {
			return exitError{code: 1, message: fmt.Sprintf("%d resources differ between pilot and Envoy %s", differ, opts.envoy)}
		}
		return nil
	}
	dump := fromPilot
	if fromEnvoy != nil {
		dump = fromEnvoy
	}
	if g.output != "table" {
		all := map[string][]json.RawMessage{}
		for _, t := range types {
			for _, r := range opts.filter.Select(dump.Of(t)) {
				all[t] = append(all[t], r.JSON)
			}
		}
		if len(types) == 1 {
			return printData(out, g.output, orEmpty(all[types[0]]))
		}
		return printData(out, g.output, all)
	}
	for i, t := range types {
		if len(types) > 1 {
			if i > 0 {
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "%s:\n", strings.ToUpper(t))
		}
		if err := printTable(out, t, opts.filter.Select(dump.Of(t)), &opts.filter); err != nil {
			return err
		}
	}
	return nil
}

func orEmpty(rs []json.RawMessage) []json.RawMessage {
	if rs == nil {
		return []json.RawMessage{}
	}
	return rs
}

// pilotDump asks each pilot for the proxy's dump: the first that has it connected (or can
// generate it) answers.
func pilotDump(cmd *cobra.Command, pilots []*skiffctl.Pilot, proxy string) (*skiffctl.Dump, error) {
	var firstErr error
	for _, p := range pilots {
		d, err := p.ConfigDump(cmd.Context(), proxy)
		if err == nil {
			return d, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func printTable(w io.Writer, typ string, rs []*skiffctl.Resource, f *skiffctl.Filter) error {
	switch typ {
	case skiffctl.Clusters:
		return skiffctl.PrintClusters(w, rs)
	case skiffctl.Listeners:
		return skiffctl.PrintListeners(w, rs)
	case skiffctl.Routes:
		return skiffctl.PrintRoutes(w, rs)
	case skiffctl.Endpoints:
		return skiffctl.PrintEndpoints(w, rs, f)
	case skiffctl.Secrets:
		return skiffctl.PrintSecrets(w, rs, time.Now())
	case skiffctl.Bootstrap:
		return skiffctl.PrintBootstrap(w, rs)
	case skiffctl.Extensions:
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTYPE")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%s\n", r.Name, extensionType(r))
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown type %s", typ)
}

// extensionType is the type of an extension configuration's payload.
func extensionType(r *skiffctl.Resource) string {
	var v struct {
		TypedConfig struct {
			Type string `json:"@type"`
		} `json:"typed_config"`
	}
	_ = json.Unmarshal(r.JSON, &v)
	return v.TypedConfig.Type[strings.LastIndexByte(v.TypedConfig.Type, '/')+1:]
}
